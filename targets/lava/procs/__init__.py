"""Our own Lava processes (numpy-only models). Lava's compiler execs every module here."""
