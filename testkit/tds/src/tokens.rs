//! Writers for the server-to-client tokens (MS-TDS 2.2.7) this server sends.

use bytes::BufMut;

pub(crate) const TOKEN_COLMETADATA: u8 = 0x81;
pub(crate) const TOKEN_ERROR: u8 = 0xAA;
pub(crate) const TOKEN_INFO: u8 = 0xAB;
pub(crate) const TOKEN_LOGINACK: u8 = 0xAD;
pub(crate) const TOKEN_FEATUREEXTACK: u8 = 0xAE;
pub(crate) const TOKEN_ROW: u8 = 0xD1;
pub(crate) const TOKEN_NBCROW: u8 = 0xD2;
pub(crate) const TOKEN_ENVCHANGE: u8 = 0xE3;
pub(crate) const TOKEN_RETURNSTATUS: u8 = 0x79;
pub(crate) const TOKEN_DONE: u8 = 0xFD;
pub(crate) const TOKEN_DONEPROC: u8 = 0xFE;
pub(crate) const TOKEN_DONEINPROC: u8 = 0xFF;

pub(crate) const DONE_FINAL: u16 = 0x0000;
pub(crate) const DONE_MORE: u16 = 0x0001;
pub(crate) const DONE_ERROR: u16 = 0x0002;
pub(crate) const DONE_COUNT: u16 = 0x0010;
pub(crate) const DONE_ATTN: u16 = 0x0020;

/// CurCmd values SQL Server reports in DONE tokens.
pub(crate) const CMD_SELECT: u16 = 0x00C1;
pub(crate) const CMD_EXECUTE: u16 = 0x00E0;

/// The name SQL Server reports as "server" in ERROR/INFO tokens.
pub(crate) const SERVER_NAME: &str = "SQLVIGIL-TDS";

/// SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, IgnoreCase|IgnoreKana|IgnoreWidth, sort id 52.
pub(crate) const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// B_VARCHAR: length in characters (one byte), UTF-16LE. Truncated at 255 units.
pub(crate) fn put_b_varchar(buf: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(255).collect();
    buf.put_u8(units.len() as u8);
    for u in units {
        buf.put_u16_le(u);
    }
}

/// US_VARCHAR: length in characters (two bytes), UTF-16LE.
pub(crate) fn put_us_varchar(buf: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(u16::MAX as usize).collect();
    buf.put_u16_le(units.len() as u16);
    for u in units {
        buf.put_u16_le(u);
    }
}

pub(crate) fn done(buf: &mut Vec<u8>, token: u8, status: u16, cur_cmd: u16, rows: u64) {
    buf.put_u8(token);
    buf.put_u16_le(status);
    buf.put_u16_le(cur_cmd);
    buf.put_u64_le(rows);
}

/// ERROR (0xAA) or INFO (0xAB).
pub(crate) fn message(buf: &mut Vec<u8>, token: u8, number: u32, state: u8, class: u8, text: &str) {
    let mut body = Vec::new();
    body.put_u32_le(number);
    body.put_u8(state);
    body.put_u8(class);
    put_us_varchar(&mut body, text);
    put_b_varchar(&mut body, SERVER_NAME);
    put_b_varchar(&mut body, "");
    body.put_u32_le(1);
    buf.put_u8(token);
    buf.put_u16_le(body.len() as u16);
    buf.extend_from_slice(&body);
}

pub(crate) fn error(buf: &mut Vec<u8>, number: u32, state: u8, class: u8, text: &str) {
    message(buf, TOKEN_ERROR, number, state, class, text);
}

pub(crate) fn info(buf: &mut Vec<u8>, number: u32, state: u8, class: u8, text: &str) {
    message(buf, TOKEN_INFO, number, state, class, text);
}

/// ENVCHANGE with B_VARCHAR new/old values (database, language, packet size).
pub(crate) fn envchange_str(buf: &mut Vec<u8>, ty: u8, new: &str, old: &str) {
    let mut body = vec![ty];
    put_b_varchar(&mut body, new);
    put_b_varchar(&mut body, old);
    buf.put_u8(TOKEN_ENVCHANGE);
    buf.put_u16_le(body.len() as u16);
    buf.extend_from_slice(&body);
}

/// ENVCHANGE with B_VARBYTE new/old values (collation, transactions).
pub(crate) fn envchange_bytes(buf: &mut Vec<u8>, ty: u8, new: &[u8], old: &[u8]) {
    let mut body = vec![ty, new.len() as u8];
    body.extend_from_slice(new);
    body.put_u8(old.len() as u8);
    body.extend_from_slice(old);
    buf.put_u8(TOKEN_ENVCHANGE);
    buf.put_u16_le(body.len() as u16);
    buf.extend_from_slice(&body);
}

pub(crate) const ENV_DATABASE: u8 = 1;
pub(crate) const ENV_LANGUAGE: u8 = 2;
pub(crate) const ENV_PACKET_SIZE: u8 = 4;
pub(crate) const ENV_COLLATION: u8 = 7;
pub(crate) const ENV_BEGIN_TRAN: u8 = 8;
pub(crate) const ENV_COMMIT_TRAN: u8 = 9;
pub(crate) const ENV_ROLLBACK_TRAN: u8 = 10;

/// SQL Server 2022 (16.0.4135) as reported in PRELOGIN and LOGINACK.
pub(crate) const SERVER_VERSION: (u8, u8, u16) = (16, 0, 4135);

pub(crate) fn login_ack(buf: &mut Vec<u8>) {
    let mut body = vec![0x01]; // interface: SQL_TSQL
    body.extend_from_slice(&[0x74, 0x00, 0x00, 0x04]); // TDS 7.4
    put_b_varchar(&mut body, "Microsoft SQL Server");
    let (major, minor, build) = SERVER_VERSION;
    body.put_u8(major);
    body.put_u8(minor);
    body.put_u16(build);
    buf.put_u8(TOKEN_LOGINACK);
    buf.put_u16_le(body.len() as u16);
    buf.extend_from_slice(&body);
}

/// FEATUREEXTACK acknowledging FEDAUTH (security token library, no nonce).
pub(crate) fn fedauth_ack(buf: &mut Vec<u8>) {
    buf.put_u8(TOKEN_FEATUREEXTACK);
    buf.put_u8(0x02);
    buf.put_u32_le(0);
    buf.put_u8(0xFF);
}

pub(crate) fn return_status(buf: &mut Vec<u8>, status: i32) {
    buf.put_u8(TOKEN_RETURNSTATUS);
    buf.put_i32_le(status);
}
