#!/usr/bin/env python3
"""tools/unicode_word_ranges.py: MLFlowLogger's table of Unicode word characters is exactly this Python's
str.isalnum() (MLflow's \\w), when this Python has the table's Unicode version."""
import os
import subprocess
import sys

tool = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "unicode_word_ranges.py")
result = subprocess.run([sys.executable, tool, "--check"], capture_output=True, text=True)
print(result.stdout + result.stderr, end="")
assert result.returncode == 0, "the table differs from str.isalnum()"
