DROP TRIGGER IF EXISTS sessions_revoked ON sessions;
DROP FUNCTION IF EXISTS sessions_revoked();
DROP TABLE sessions;
