#!/bin/sh
# Run once by the postgres image on an empty volume: AxonTask's own role, which owns only
# its database (the image's superuser stays for administration).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE axon LOGIN PASSWORD '${AXON_DB_PASSWORD}';
CREATE DATABASE axontask OWNER axon;
SQL
