-- sqlvigil:top-queries
-- Cumulative use of the cached plans by query (the monitor diffs two samples: what each
-- query used in between). Times in the DMV are microseconds; here milliseconds.
-- Needs: VIEW SERVER STATE.
SELECT TOP (200)
    CONVERT(varchar(18), qs.query_hash, 1)                      AS query_hash,
    CONVERT(varchar(18), qs.query_plan_hash, 1)                 AS query_plan_hash,
    MAX(DB_NAME(st.dbid))                                       AS database_name,
    CAST(SUM(qs.execution_count) AS bigint)                     AS execution_count,
    CAST(SUM(qs.total_worker_time) / 1000 AS bigint)            AS total_cpu_ms,
    CAST(SUM(qs.total_elapsed_time) / 1000 AS bigint)           AS total_elapsed_ms,
    CAST(SUM(qs.total_logical_reads) AS bigint)                 AS total_logical_reads,
    CAST(SUM(qs.total_logical_writes) AS bigint)                AS total_logical_writes,
    CAST(SUM(qs.total_physical_reads) AS bigint)                AS total_physical_reads,
    CAST(SUM(qs.total_rows) AS bigint)                          AS total_rows,
    CAST(SUM(qs.total_grant_kb) AS bigint)                      AS total_grant_kb,
    -- creation_time is the server's local time; compared with UTC sample times.
    DATEADD(minute, DATEDIFF(minute, GETDATE(), GETUTCDATE()), MIN(qs.creation_time)) AS counted_since,
    MAX(SUBSTRING(st.text, qs.statement_start_offset / 2 + 1,
        (CASE WHEN qs.statement_end_offset = -1 THEN DATALENGTH(st.text)
              ELSE qs.statement_end_offset END - qs.statement_start_offset) / 2 + 1)) AS statement_text
FROM sys.dm_exec_query_stats AS qs
CROSS APPLY sys.dm_exec_sql_text(qs.sql_handle) AS st
GROUP BY qs.query_hash, qs.query_plan_hash
ORDER BY SUM(qs.total_worker_time) DESC;
