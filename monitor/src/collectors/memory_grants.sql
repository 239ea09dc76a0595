-- sqlvigil:memory-grants
-- Query memory grants given and waiting (RESOURCE_SEMAPHORE pressure).
-- Needs: VIEW SERVER STATE.
SELECT
    COUNT(CASE WHEN grant_time IS NOT NULL THEN 1 END)                         AS granted,
    COUNT(CASE WHEN grant_time IS NULL THEN 1 END)                             AS pending,
    CAST(COALESCE(SUM(granted_memory_kb), 0) AS bigint)                        AS granted_kb,
    CAST(COALESCE(SUM(CASE WHEN grant_time IS NULL THEN requested_memory_kb END), 0) AS bigint) AS requested_kb_pending,
    CAST(COALESCE(MAX(CASE WHEN grant_time IS NULL THEN wait_time_ms END), 0) AS bigint)        AS longest_pending_wait_ms
FROM sys.dm_exec_query_memory_grants;
