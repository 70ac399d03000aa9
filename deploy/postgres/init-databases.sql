-- One database per service: each service owns its data and reaches no other service's tables.
-- Runs once, when the server's data directory is first created.
CREATE DATABASE auth;
CREATE DATABASE tickets;
CREATE DATABASE orders;
CREATE DATABASE expiration;
CREATE DATABASE payments;
