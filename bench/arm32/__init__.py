"""The hub on 32-bit ARM: run.sh builds a Debian armhf root filesystem, runs smoke.py and quick scenarios."""
