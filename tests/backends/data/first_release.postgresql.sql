CREATE SCHEMA __SCHEMA__;
CREATE TABLE __SCHEMA__.burrow_job_history (
    id bigint NOT NULL,
    job_id bigint NOT NULL,
    attempt integer NOT NULL,
    event character varying(32) NOT NULL,
    error text,
    at timestamp with time zone NOT NULL
);
CREATE SEQUENCE __SCHEMA__.burrow_job_history_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE __SCHEMA__.burrow_job_history_id_seq OWNED BY __SCHEMA__.burrow_job_history.id;
CREATE TABLE __SCHEMA__.burrow_jobs (
    id bigint NOT NULL,
    task character varying(200) NOT NULL,
    priority integer DEFAULT 0 NOT NULL,
    state character varying(16) DEFAULT 'queued'::character varying NOT NULL,
    payload bytea NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    max_retries integer NOT NULL,
    run_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    owner character varying(200),
    lease_expires_at timestamp with time zone,
    last_error text,
    result bytea,
    CONSTRAINT burrow_jobs_state_valid CHECK (((state)::text = ANY ((ARRAY['queued'::character varying, 'running'::character varying, 'succeeded'::character varying, 'failed'::character varying, 'cancelled'::character varying])::text[])))
);
CREATE SEQUENCE __SCHEMA__.burrow_jobs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE __SCHEMA__.burrow_jobs_id_seq OWNED BY __SCHEMA__.burrow_jobs.id;
CREATE TABLE __SCHEMA__.burrow_processes (
    owner character varying(200) NOT NULL,
    host character varying(255) NOT NULL,
    pid integer NOT NULL,
    role character varying(32) NOT NULL,
    started_at timestamp with time zone NOT NULL,
    heartbeat_at timestamp with time zone NOT NULL
);
CREATE TABLE __SCHEMA__.burrow_schema_version (
    version integer NOT NULL,
    applied_at timestamp with time zone NOT NULL
);
CREATE SEQUENCE __SCHEMA__.burrow_schema_version_version_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE __SCHEMA__.burrow_schema_version_version_seq OWNED BY __SCHEMA__.burrow_schema_version.version;
ALTER TABLE ONLY __SCHEMA__.burrow_job_history ALTER COLUMN id SET DEFAULT nextval('__SCHEMA__.burrow_job_history_id_seq'::regclass);
ALTER TABLE ONLY __SCHEMA__.burrow_jobs ALTER COLUMN id SET DEFAULT nextval('__SCHEMA__.burrow_jobs_id_seq'::regclass);
ALTER TABLE ONLY __SCHEMA__.burrow_schema_version ALTER COLUMN version SET DEFAULT nextval('__SCHEMA__.burrow_schema_version_version_seq'::regclass);
INSERT INTO __SCHEMA__.burrow_job_history VALUES (1, 5, 1, 'retried', 'ValueError: first try
Traceback ...', '2026-12-01 07:27:09.185272+00');
INSERT INTO __SCHEMA__.burrow_job_history VALUES (2, 6, 1, 'retried', 'OSError: once', '2026-12-01 07:27:09.185272+00');
INSERT INTO __SCHEMA__.burrow_job_history VALUES (3, 9, 1, 'released', 'released: shutdown_timeout reached', '2026-12-01 07:27:09.185272+00');
INSERT INTO __SCHEMA__.burrow_job_history VALUES (4, 6, 2, 'failed', 'OSError: twice
Traceback ...', '2026-12-01 07:27:09.18888+00');
INSERT INTO __SCHEMA__.burrow_jobs VALUES (1, 'v1.queued', 5, 'queued', '\x7b226e223a317d', 0, 3, '2026-12-01 07:27:09.174021+00', '2026-12-01 07:27:09.174021+00', NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO __SCHEMA__.burrow_jobs VALUES (2, 'v1.scheduled', 0, 'queued', '\x7b226e223a327d', 0, 3, '2031-01-02 03:04:05.678901+00', '2026-12-01 07:27:09.176248+00', NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO __SCHEMA__.burrow_jobs VALUES (7, 'v1.running', 0, 'running', '\x7b226e223a377d', 1, 3, '2026-12-01 07:27:09.180646+00', '2026-12-01 07:27:09.180646+00', '2026-12-01 07:27:09.183149+00', NULL, 'v1-owner', '2026-12-01 07:27:39.183149+00', NULL, NULL);
INSERT INTO __SCHEMA__.burrow_jobs VALUES (3, 'v1.succeeds', 0, 'succeeded', '\x7b226e223a337d', 1, 3, '2026-12-01 07:27:09.177273+00', '2026-12-01 07:27:09.177273+00', '2026-12-01 07:27:09.183149+00', '2026-12-01 07:27:09.185272+00', NULL, NULL, NULL, '\x7b2273756d223a20337d');
INSERT INTO __SCHEMA__.burrow_jobs VALUES (4, 'v1.binary', 0, 'succeeded', '\x7b226e223a347d', 1, 3, '2026-12-01 07:27:09.178147+00', '2026-12-01 07:27:09.178147+00', '2026-12-01 07:27:09.183149+00', '2026-12-01 07:27:09.185272+00', NULL, NULL, NULL, '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff');
INSERT INTO __SCHEMA__.burrow_jobs VALUES (9, 'v1.released', 0, 'queued', '\x7b226e223a397d', 0, 3, '2026-12-01 07:27:09.182321+00', '2026-12-01 07:27:09.182321+00', '2026-12-01 07:27:09.183149+00', NULL, NULL, NULL, 'released: shutdown_timeout reached', NULL);
INSERT INTO __SCHEMA__.burrow_jobs VALUES (5, 'v1.retried', 0, 'succeeded', '\x7b226e223a357d', 2, 2, '2026-12-01 07:27:09.185272+00', '2026-12-01 07:27:09.17897+00', '2026-12-01 07:27:09.187647+00', '2026-12-01 07:27:09.18888+00', NULL, NULL, 'ValueError: first try
Traceback ...', '\x3432');
INSERT INTO __SCHEMA__.burrow_jobs VALUES (6, 'v1.fails', 0, 'failed', '\x7b226e223a367d', 2, 1, '2026-12-01 07:27:09.185272+00', '2026-12-01 07:27:09.17987+00', '2026-12-01 07:27:09.187647+00', '2026-12-01 07:27:09.18888+00', NULL, NULL, 'OSError: twice
Traceback ...', NULL);
INSERT INTO __SCHEMA__.burrow_jobs VALUES (8, 'v1.cancelled', 0, 'cancelled', '\x7b226e223a387d', 0, 3, '2026-12-01 07:27:09.181478+00', '2026-12-01 07:27:09.181478+00', NULL, '2026-12-01 07:27:09.195584+00', NULL, NULL, NULL, NULL);
INSERT INTO __SCHEMA__.burrow_processes VALUES ('v1-host:1:supervisor:abcd', 'v1-host', 1, 'supervisor', '2026-12-01 07:27:09.199535+00', '2026-12-01 07:27:09.199535+00');
INSERT INTO __SCHEMA__.burrow_schema_version VALUES (1, '2026-12-01 07:27:09.086289+00');
SELECT pg_catalog.setval('__SCHEMA__.burrow_job_history_id_seq', 4, true);
SELECT pg_catalog.setval('__SCHEMA__.burrow_jobs_id_seq', 9, true);
SELECT pg_catalog.setval('__SCHEMA__.burrow_schema_version_version_seq', 1, false);
ALTER TABLE ONLY __SCHEMA__.burrow_job_history
    ADD CONSTRAINT burrow_job_history_pkey PRIMARY KEY (id);
ALTER TABLE ONLY __SCHEMA__.burrow_jobs
    ADD CONSTRAINT burrow_jobs_pkey PRIMARY KEY (id);
ALTER TABLE ONLY __SCHEMA__.burrow_processes
    ADD CONSTRAINT burrow_processes_pkey PRIMARY KEY (owner);
ALTER TABLE ONLY __SCHEMA__.burrow_schema_version
    ADD CONSTRAINT burrow_schema_version_pkey PRIMARY KEY (version);
CREATE INDEX burrow_jobs_queued_idx ON __SCHEMA__.burrow_jobs USING btree (priority DESC, run_at, id) WHERE ((state)::text = 'queued'::text);
CREATE INDEX burrow_jobs_running_idx ON __SCHEMA__.burrow_jobs USING btree (lease_expires_at) WHERE ((state)::text = 'running'::text);
CREATE INDEX ix_burrow_job_history_job_id ON __SCHEMA__.burrow_job_history USING btree (job_id);
