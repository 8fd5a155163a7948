\sleep 10 s
SELECT 1;
