#!/bin/sh
# Run once by the postgres image on an empty volume: AxonTask's own role, which owns only
# its database (the image's superuser stays for administration). The password is passed as
# a psql variable, quoted by psql.
set -eu
psql -v ON_ERROR_STOP=1 -v pw="$AXON_DB_PASSWORD" --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE ROLE axon LOGIN PASSWORD :'pw';
CREATE DATABASE axontask OWNER axon;
SQL
