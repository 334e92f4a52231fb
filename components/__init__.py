"""talkalign components: the library every pipeline stage is built from (no orchestration here)."""
