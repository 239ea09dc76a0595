-- sqlvigil:log-space
-- Transaction log size and use per database from the Databases performance counters
-- (one query for all databases, no per-database context switch), and why a log cannot
-- be truncated. Needs: VIEW SERVER STATE.
SELECT
    d.name                            AS database_name,
    CAST(sz.cntr_value AS bigint)     AS log_size_kb,
    CAST(us.cntr_value AS bigint)     AS log_used_kb,
    d.log_reuse_wait_desc
FROM sys.databases AS d
JOIN sys.dm_os_performance_counters AS sz
  ON sz.object_name LIKE N'%:Databases%' AND sz.counter_name = N'Log File(s) Size (KB)'
 AND RTRIM(sz.instance_name) = d.name
JOIN sys.dm_os_performance_counters AS us
  ON us.object_name LIKE N'%:Databases%' AND us.counter_name = N'Log File(s) Used Size (KB)'
 AND RTRIM(us.instance_name) = d.name
ORDER BY CAST(us.cntr_value AS float) / NULLIF(sz.cntr_value, 0) DESC;
