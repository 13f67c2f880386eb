"""The seed's T3 client (``t3_client.py``), vendored for afk's benchmarks; see ../README.md."""
