"""The test kit: what the tests, the benchmarks (bench/) and `make sandbox` (scripts/sandbox.py) run
on. Not part of the deployment (pyproject's package list is backend_worker only).

    machine         what every test machine shares: the cached Debian root file system, systemd-nspawn,
                    SSH, ansible-playbook, the cleanup of what a killed run left
    testhost        one booted Debian 12 sharing this machine's network (tests/deploy)
    testnet         machines in network namespaces of their own on a private bridge (tests/multihost,
                    tests/readme, make sandbox)
    multihost       the multi-host layout of inventory/example and inventories for a test network
    services        a private Redis, PostgreSQL and Celery workers on free ports (tests/integration)
    stack           checks of a deployed stack from outside: HTTP, psql and `soniquebay` over SSH
    audio_fixtures  real encoded audio: seeds (cached), tagging, whole libraries, bad files (a
                    module each)
    role_filters    the roles' filters as plain Python
    mediafile_parity  beets' mediafile read as docs/tags.md says ours differs (parity tests)
    deploy/         the deployed test host: its default worker layout, how the tests look at it
                    (checks), what they do to it (ops) and the random faults of `make chaos` (chaos)
"""
