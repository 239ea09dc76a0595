-- sqlvigil:tempdb
-- Tempdb space by kind (user objects, internal objects, version store, free), then the
-- sessions holding most of it. Needs: VIEW SERVER STATE.
SELECT
    CAST(SUM(user_object_reserved_page_count) * 8 AS bigint)     AS user_objects_kb,
    CAST(SUM(internal_object_reserved_page_count) * 8 AS bigint) AS internal_objects_kb,
    CAST(SUM(version_store_reserved_page_count) * 8 AS bigint)   AS version_store_kb,
    CAST(SUM(unallocated_extent_page_count) * 8 AS bigint)       AS free_kb
FROM tempdb.sys.dm_db_file_space_usage;

SELECT TOP (10)
    u.session_id,
    CAST(SUM(u.user_objects_alloc_page_count - u.user_objects_dealloc_page_count) * 8 AS bigint)         AS user_objects_kb,
    CAST(SUM(u.internal_objects_alloc_page_count - u.internal_objects_dealloc_page_count) * 8 AS bigint) AS internal_objects_kb
FROM tempdb.sys.dm_db_session_space_usage AS u
WHERE u.session_id > 50
GROUP BY u.session_id
HAVING SUM(u.user_objects_alloc_page_count - u.user_objects_dealloc_page_count
         + u.internal_objects_alloc_page_count - u.internal_objects_dealloc_page_count) > 0
ORDER BY SUM(u.user_objects_alloc_page_count - u.user_objects_dealloc_page_count
           + u.internal_objects_alloc_page_count - u.internal_objects_dealloc_page_count) DESC;
