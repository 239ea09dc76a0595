#!/usr/bin/env python3
"""Independent TDS client check for sqlvigil-testkit-tds, using python-tds (pytds).

Usage:
  pytds_check.py rows      --port P --user U --password W --query SQL [--param] [--cafile CA] [--login-only]
  pytds_check.py attention --port P --user U --password W --query SQL --then SQL [--timeout S] [--cafile CA]

`rows` runs the query (as a SQL batch, or as sp_executesql with one parameter when
--param is given) and prints {"columns": [...], "rows": [...]} as JSON.
`attention` runs a query expected to exceed --timeout (pytds then sends an
ATTENTION), then runs --then on the same connection and prints
{"timed_out": bool, "error": str, "then": {"columns":..., "rows":...}}.
Install with: python3 -m pip install -r tests/requirements.txt
"""

import argparse
import datetime
import decimal
import json
import sys
import uuid

try:
    import pytds
except ImportError:  # pragma: no cover - reported to the Rust test
    print("IMPORT-ERROR: python-tds is not installed; run: python3 -m pip install -r tests/requirements.txt",
          file=sys.stderr)
    sys.exit(3)


def plain(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "0x" + bytes(v).hex().upper()
    if isinstance(v, uuid.UUID):
        return str(v)
    return repr(v)


def result(cursor):
    columns = [d[0] for d in (cursor.description or [])]
    rows = [[plain(v) for v in row] for row in cursor.fetchall()]
    return {"columns": columns, "rows": rows}


def connect(args, timeout=None):
    kwargs = dict(
        server="localhost",
        port=args.port,
        user=args.user,
        password=args.password,
        database="master",
        appname="pytds-check",
        autocommit=args.autocommit,
        login_timeout=10,
        timeout=timeout,
    )
    if args.cafile:
        kwargs["cafile"] = args.cafile
        kwargs["validate_host"] = True
        kwargs["enc_login_only"] = args.login_only
    return pytds.connect(**kwargs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["rows", "attention"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--query", required=True)
    p.add_argument("--then")
    p.add_argument("--param", action="store_true")
    p.add_argument("--cafile")
    p.add_argument("--login-only", action="store_true")
    p.add_argument("--autocommit", action="store_true")
    p.add_argument("--timeout", type=float, default=1.0)
    args = p.parse_args()

    if args.mode == "rows":
        with connect(args) as conn:
            with conn.cursor() as cur:
                if args.param:
                    cur.execute(args.query, (1,))
                else:
                    cur.execute(args.query)
                out = result(cur)
        print(json.dumps(out))
        return 0

    conn = connect(args, timeout=args.timeout)
    timed_out, error = False, ""
    cur = conn.cursor()
    try:
        cur.execute(args.query)
        cur.fetchall()
    except pytds.tds_base.TimeoutError as e:  # raised after pytds sent ATTENTION
        timed_out, error = True, type(e).__name__
    except Exception as e:  # noqa: BLE001 - report whatever happened
        error = "%s: %s" % (type(e).__name__, e)
    then = None
    if args.then:
        cur = conn.cursor()
        cur.execute(args.then)
        then = result(cur)
    conn.close()
    print(json.dumps({"timed_out": timed_out, "error": error, "then": then}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
