"""The benchmark's modules live in scripts/ (run as scripts, not installed): import them from there."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
