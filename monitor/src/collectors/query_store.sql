-- sqlvigil:query-store
-- Query Store's runtime statistics in every database that has it on (SQL Server 2016+,
-- Azure SQL): per query, plan and statistics interval, what ran so far in the interval.
-- The monitor diffs two samples, so recompiles and plan-cache evictions lose nothing;
-- intervals that ended over two hours ago no longer change and are left out.
-- Times in Query Store are microseconds, memory 8 KB pages; here ms and KB.
-- Needs: VIEW DATABASE STATE in each database. On Azure SQL Database: this database only.
DECLARE @sql nvarchar(max) = N'';
SELECT @sql = @sql + CASE WHEN @sql = N'' THEN N'' ELSE N' UNION ALL ' END + N'
SELECT CONVERT(varchar(18), q.query_hash, 1)                                        AS query_hash,
       CONVERT(varchar(18), p.query_plan_hash, 1)                                   AS query_plan_hash,
       CAST(rs.runtime_stats_interval_id AS bigint)                                 AS interval_id,
       ' + QUOTENAME(d.name, '''') + N'                                             AS database_name,
       CAST(SUM(rs.count_executions) AS bigint)                                     AS execution_count,
       CAST(SUM(rs.avg_cpu_time * rs.count_executions) / 1000 AS bigint)            AS total_cpu_ms,
       CAST(SUM(rs.avg_duration * rs.count_executions) / 1000 AS bigint)            AS total_elapsed_ms,
       CAST(SUM(rs.avg_logical_io_reads * rs.count_executions) AS bigint)           AS total_logical_reads,
       CAST(SUM(rs.avg_logical_io_writes * rs.count_executions) AS bigint)          AS total_logical_writes,
       CAST(SUM(rs.avg_physical_io_reads * rs.count_executions) AS bigint)          AS total_physical_reads,
       CAST(SUM(rs.avg_rowcount * rs.count_executions) AS bigint)                   AS total_rows,
       CAST(SUM(rs.avg_query_max_used_memory * rs.count_executions) * 8 AS bigint)  AS total_grant_kb,
       MIN(rs.first_execution_time)                                                 AS counted_since,
       MAX(qt.query_sql_text)                                                       AS statement_text
FROM ' + QUOTENAME(d.name) + N'.sys.query_store_runtime_stats AS rs
JOIN ' + QUOTENAME(d.name) + N'.sys.query_store_runtime_stats_interval AS i
  ON i.runtime_stats_interval_id = rs.runtime_stats_interval_id
JOIN ' + QUOTENAME(d.name) + N'.sys.query_store_plan AS p ON p.plan_id = rs.plan_id
JOIN ' + QUOTENAME(d.name) + N'.sys.query_store_query AS q ON q.query_id = p.query_id
JOIN ' + QUOTENAME(d.name) + N'.sys.query_store_query_text AS qt ON qt.query_text_id = q.query_text_id
WHERE i.end_time > DATEADD(hour, -2, SYSUTCDATETIME())
GROUP BY q.query_hash, p.query_plan_hash, rs.runtime_stats_interval_id'
FROM sys.databases AS d
WHERE d.is_query_store_on = 1
  AND d.state = 0
  AND (CAST(SERVERPROPERTY('EngineEdition') AS int) <> 5 OR d.database_id = DB_ID());
IF @sql <> N'' EXEC sys.sp_executesql @sql;
