#!/usr/bin/env python3
"""tools/godbolt_link.py: the link decodes to Compiler Explorer's client state with the example's source (its include
pointing at the pinned raw URL), g++ with -std=c++17 -O2 -DTRAINLOOP_WITH_TORCH=0, and an execution pane; the decoded
source, with the URL mapped back to the local single header, compiles with those options and runs. A branch URL and
a file that is not the header are refused."""
import base64
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile

root = pathlib.Path(__file__).resolve().parents[2]
tool = root / "tools" / "godbolt_link.py"
url = "https://raw.githubusercontent.com/trainloop/trainloop/v0.1.0/single_include/trainloop.hpp"
example = root / "examples" / "engine_basics" / "main.cpp"

link = subprocess.run([sys.executable, tool, url], check=True, capture_output=True, text=True).stdout.strip()
prefix = "https://godbolt.org/clientstate/"
assert link.startswith(prefix) and "\n" not in link, link[:80]
payload = link[len(prefix):]
assert all(c.isalnum() or c in "-_=" for c in payload), "the state is not URL-safe base64"
state = json.loads(base64.b64decode(payload, altchars=b"-_"))  # what Node's Buffer.from(s, 'base64') reads

(session,) = state["sessions"]
assert session["language"] == "c++" and session["id"] == 1, session.keys()
expected_source = example.read_text().replace("#include <trainloop.hpp>", f"#include <{url}>")
assert session["source"] == expected_source, "the source is not the example with its include pointed at the URL"
(compiler,) = session["compilers"]
assert compiler["id"].startswith("g") and compiler["options"] == "-std=c++17 -O2 -DTRAINLOOP_WITH_TORCH=0", compiler
assert compiler["filters"]["intel"] and compiler["filters"]["demangle"], compiler["filters"]
(executor,) = session["executors"]
assert executor["compiler"]["id"] == compiler["id"] and executor["compiler"]["options"] == compiler["options"]
assert executor["compilerOutputVisible"] is True, executor

# What Compiler Explorer would build: the URL include is the single header.
with tempfile.TemporaryDirectory() as d:
    source = pathlib.Path(d) / "example.cpp"
    source.write_text(session["source"].replace(f"#include <{url}>", f'#include "{root / "single_include" / "trainloop.hpp"}"'))
    program = pathlib.Path(d) / "example"
    subprocess.run(["g++", *shlex.split(compiler["options"]), str(source), "-o", str(program)], check=True)
    output = subprocess.run([str(program), "--smoke"], check=True, capture_output=True, text=True).stdout
    assert "w = " in output, output

for bad, reason in ((url.replace("/v0.1.0/", "/main/"), "moves"), ("https://example.com/other.hpp", "not an https URL")):
    result = subprocess.run([sys.executable, tool, bad], capture_output=True, text=True)
    assert result.returncode == 2 and reason in result.stderr, (bad, result.stderr)
print("ok:", len(link), "characters")
