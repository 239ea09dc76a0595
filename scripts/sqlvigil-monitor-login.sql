-- A least-privilege login for sqlvigil's live monitor (run as a sysadmin).
-- Replace the password, and repeat the USER block in each user database whose
-- Query Store or database-scoped DMVs the monitor should read.
USE master;
CREATE LOGIN sqlvigil WITH PASSWORD = N'<a strong password>', CHECK_POLICY = ON;
GRANT VIEW SERVER STATE TO sqlvigil;       -- sys.dm_exec_*, sys.dm_os_*, sys.dm_io_*
GRANT VIEW ANY DEFINITION TO sqlvigil;     -- sys.master_files, statement text of others' sessions
-- SQL Server 2022 splits these: VIEW SERVER PERFORMANCE STATE is enough for the DMVs.
-- GRANT VIEW SERVER PERFORMANCE STATE TO sqlvigil;
GO
-- Per database (tempdb DMVs need nothing more):
-- USE [Sales];
-- CREATE USER sqlvigil FOR LOGIN sqlvigil;
-- GRANT VIEW DATABASE STATE TO sqlvigil;
-- GO
-- Azure SQL Database (contained user in the database itself):
-- CREATE USER sqlvigil WITH PASSWORD = N'<a strong password>';
-- GRANT VIEW DATABASE STATE TO sqlvigil;
