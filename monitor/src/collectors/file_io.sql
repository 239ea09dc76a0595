-- sqlvigil:io
-- Cumulative IO per database file since the instance started (the monitor diffs two
-- samples into latency over the interval). Needs: VIEW SERVER STATE, VIEW ANY DEFINITION
-- (sys.master_files).
SELECT
    (SELECT sqlserver_start_time FROM sys.dm_os_sys_info)  AS sqlserver_start_time,
    DB_NAME(vfs.database_id)                   AS database_name,
    CAST(vfs.file_id AS int)                   AS file_id,
    mf.type_desc                               AS file_type,
    mf.physical_name,
    CAST(vfs.num_of_reads AS bigint)           AS reads,
    CAST(vfs.num_of_writes AS bigint)          AS writes,
    CAST(vfs.num_of_bytes_read AS bigint)      AS read_bytes,
    CAST(vfs.num_of_bytes_written AS bigint)   AS written_bytes,
    CAST(vfs.io_stall_read_ms AS bigint)       AS read_stall_ms,
    CAST(vfs.io_stall_write_ms AS bigint)      AS write_stall_ms
FROM sys.dm_io_virtual_file_stats(NULL, NULL) AS vfs
JOIN sys.master_files AS mf ON mf.database_id = vfs.database_id AND mf.file_id = vfs.file_id
ORDER BY vfs.io_stall_read_ms + vfs.io_stall_write_ms DESC;
