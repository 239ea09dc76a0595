-- sqlvigil:server
-- What the instance is: version and edition decide which collector queries fit it.
-- Needs: VIEW SERVER STATE (sys.dm_os_sys_info).
SELECT
    CAST(SERVERPROPERTY('ServerName') AS nvarchar(128))     AS server_name,
    CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS product_version,
    CAST(SERVERPROPERTY('Edition') AS nvarchar(128))        AS edition,
    CAST(SERVERPROPERTY('EngineEdition') AS int)            AS engine_edition,
    (SELECT sqlserver_start_time FROM sys.dm_os_sys_info)  AS sqlserver_start_time;
