-- Checks the type matrix (type_matrix.csv, loaded through the platform with catalog.toml)
-- on a real Redshift cluster: every line of the result must say ok. Replace `ingest_check`
-- if you changed the target, and `ingest` by your processor.platform_schema.
-- It runs unchanged on the repository's Redshift stand-in (processor/tests/it/redshift_check.rs).
SELECT 'rows loaded (1 rejected)' AS item,
       CASE WHEN COUNT(*) = 4 THEN 'ok' ELSE 'FAILED: ' || CAST(COUNT(*) AS VARCHAR(20)) || ' rows' END AS result
FROM ingest_check.type_matrix
UNION ALL
SELECT 'empty fields are NULL',
       CASE WHEN COUNT(*) = 1 THEN 'ok' ELSE 'FAILED' END
FROM ingest_check.type_matrix
WHERE id = 1 AND note IS NULL AND flag IS NULL AND small_int IS NULL AND medium_int IS NULL
  AND large_int IS NULL AND single_float IS NULL AND double_float IS NULL AND day_date IS NULL
  AND local_ts IS NULL AND zoned_ts IS NULL AND price IS NULL AND amount IS NULL
  AND huge IS NULL AND body IS NULL
UNION ALL
SELECT 'minimums',
       CASE WHEN COUNT(*) = 1 THEN 'ok' ELSE 'FAILED' END
FROM ingest_check.type_matrix
WHERE id = 2 AND note = 'minimums' AND flag = FALSE
  AND small_int = -32768 AND medium_int = -2147483648 AND large_int = -9223372036854775808
  AND single_float = CAST(-0.25 AS REAL) AND double_float = CAST(-1.25e300 AS DOUBLE PRECISION)
  AND day_date = CAST('1900-01-01' AS DATE)
  AND local_ts = CAST('1900-01-01 00:00:00' AS TIMESTAMP)
  AND zoned_ts = CAST('1900-01-01 00:00:00+00' AS TIMESTAMPTZ)
  AND price = -9999999.99 AND amount = -99999999999999.9999
  AND huge = -9999999999999999999999999999.9999999999
  AND body = 'x'
UNION ALL
SELECT 'maximums, and a string of exactly 65,535 bytes',
       CASE WHEN COUNT(*) = 1 THEN 'ok' ELSE 'FAILED' END
FROM ingest_check.type_matrix
WHERE id = 3 AND flag = TRUE
  AND small_int = 32767 AND medium_int = 2147483647 AND large_int = 9223372036854775807
  AND single_float = CAST(0.5 AS REAL) AND double_float = CAST(1.25e300 AS DOUBLE PRECISION)
  AND day_date = CAST('2262-04-11' AS DATE)
  AND local_ts = CAST('2262-04-11 23:47:16.854775' AS TIMESTAMP)
  AND zoned_ts = CAST('2262-04-11 23:47:16.854775+00' AS TIMESTAMPTZ)
  AND price = 9999999.99 AND amount = 99999999999999.9999
  AND huge = 9999999999999999999999999999.9999999999
  AND OCTET_LENGTH(body) = 65535 AND body = REPEAT('€', 21845)
UNION ALL
SELECT 'multibyte text, an offset converted to UTC, the smallest decimal steps, quotes and newlines',
       CASE WHEN COUNT(*) = 1 THEN 'ok' ELSE 'FAILED' END
FROM ingest_check.type_matrix
WHERE id = 5 AND note = 'ünïcödé ✓ 日本語'
  AND local_ts = CAST('2026-11-29 10:00:00.123456' AS TIMESTAMP)
  AND zoned_ts = CAST('2026-11-29 04:30:00.123456+00' AS TIMESTAMPTZ)
  AND price = 0.01 AND amount = 0.0001 AND huge = 0.0000000001
  AND body = '"quoted", with a comma' || CHR(10) || 'and a newline'
UNION ALL
SELECT 'a string of 65,536 bytes is rejected with the reason',
       CASE WHEN COUNT(*) = 1 THEN 'ok' ELSE 'FAILED: ' || CAST(COUNT(*) AS VARCHAR(20)) || ' rejects' END
FROM ingest.rejects
WHERE dataset = 'type_matrix' AND reason LIKE 'column body: 65536 bytes, longer than the 65535 bytes%'
ORDER BY 1;
