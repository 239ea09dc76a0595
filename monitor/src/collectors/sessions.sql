-- sqlvigil:sessions
-- User sessions that run a request, hold a transaction open or block someone, with
-- their request, statement (or last batch when idle) and tempdb use; like
-- sp_WhoIsActive. Needs: VIEW SERVER STATE.
SELECT
    SYSUTCDATETIME()                                            AS collection_time,
    s.session_id,
    COALESCE(r.status, s.status)                                AS status,
    r.command,
    r.wait_type,
    CAST(r.wait_time AS bigint)                                 AS wait_time_ms,
    r.wait_resource,
    CAST(COALESCE(r.cpu_time, s.cpu_time) AS bigint)            AS cpu_time_ms,
    CAST(r.total_elapsed_time AS bigint)                        AS elapsed_ms,
    CAST(COALESCE(r.logical_reads, s.logical_reads) AS bigint)  AS logical_reads,
    CAST(COALESCE(r.writes, s.writes) AS bigint)                AS writes,
    NULLIF(r.blocking_session_id, 0)                            AS blocking_session_id,
    DB_NAME(COALESCE(r.database_id, s.database_id))             AS database_name,
    s.login_name,
    s.host_name,
    s.program_name,
    s.open_transaction_count,
    COALESCE(
        SUBSTRING(t.text, r.statement_start_offset / 2 + 1,
            (CASE WHEN r.statement_end_offset = -1 THEN DATALENGTH(t.text)
                  ELSE r.statement_end_offset END - r.statement_start_offset) / 2 + 1),
        ib.event_info)                                          AS statement_text,
    CONVERT(varchar(18), r.query_hash, 1)                       AS query_hash,
    CONVERT(varchar(130), r.plan_handle, 1)                     AS plan_handle,
    CAST(COALESCE(su.pages, 0) * 8 AS bigint)                   AS tempdb_kb
FROM sys.dm_exec_sessions AS s
LEFT JOIN sys.dm_exec_requests AS r ON r.session_id = s.session_id
OUTER APPLY sys.dm_exec_sql_text(r.sql_handle) AS t
OUTER APPLY (
    SELECT b.event_info FROM sys.dm_exec_input_buffer(s.session_id, NULL) AS b
    WHERE r.session_id IS NULL) AS ib
OUTER APPLY (
    SELECT SUM(u.user_objects_alloc_page_count - u.user_objects_dealloc_page_count
             + u.internal_objects_alloc_page_count - u.internal_objects_dealloc_page_count) AS pages
    FROM sys.dm_db_session_space_usage AS u WHERE u.session_id = s.session_id) AS su
WHERE s.is_user_process = 1
  AND s.session_id <> @@SPID
  AND (r.session_id IS NOT NULL
       OR s.open_transaction_count > 0
       OR s.session_id IN (SELECT blocking_session_id FROM sys.dm_exec_requests WHERE blocking_session_id <> 0))
ORDER BY s.session_id;
