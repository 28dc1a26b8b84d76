-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d),
-- as POSTGRES_USER (microchat). One server, one database per service that owns state;
-- each service runs its own sqlx migrations at start.
-- deployments/k8s/postgres.yaml carries the same statements (ConfigMap postgres-init);
-- scripts/check-deployments.py fails when the two differ.
CREATE DATABASE auth;
CREATE DATABASE chat;
CREATE DATABASE listener;
CREATE DATABASE mail;
