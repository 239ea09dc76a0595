-- sqlvigil:io-azure
-- Azure SQL Database variant: the current database's files (no sys.master_files).
-- Needs: VIEW DATABASE STATE.
SELECT
    CAST(NULL AS datetime)                     AS sqlserver_start_time,
    DB_NAME()                                  AS database_name,
    CAST(vfs.file_id AS int)                   AS file_id,
    df.type_desc                               AS file_type,
    df.physical_name,
    CAST(vfs.num_of_reads AS bigint)           AS reads,
    CAST(vfs.num_of_writes AS bigint)          AS writes,
    CAST(vfs.num_of_bytes_read AS bigint)      AS read_bytes,
    CAST(vfs.num_of_bytes_written AS bigint)   AS written_bytes,
    CAST(vfs.io_stall_read_ms AS bigint)       AS read_stall_ms,
    CAST(vfs.io_stall_write_ms AS bigint)      AS write_stall_ms
FROM sys.dm_io_virtual_file_stats(DB_ID(), NULL) AS vfs
JOIN sys.database_files AS df ON df.file_id = vfs.file_id
ORDER BY vfs.io_stall_read_ms + vfs.io_stall_write_ms DESC;
