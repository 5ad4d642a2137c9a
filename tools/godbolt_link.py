#!/usr/bin/env python3
"""Prints a Compiler Explorer link that opens a trainloop example, compiled and run there.

  tools/godbolt_link.py RAW_URL_OF_SINGLE_HEADER [EXAMPLE] [--compiler ID]

RAW_URL is the single header at a release tag, e.g.
  https://raw.githubusercontent.com/trainloop/trainloop/v0.1.0/single_include/trainloop.hpp
(Compiler Explorer fetches `#include <https://...>` itself; a branch such as main would change under the link, so it
is refused). EXAMPLE defaults to examples/engine_basics/main.cpp, whose `#include <trainloop.hpp>` becomes
`#include <RAW_URL>`. LibTorch is not on Compiler Explorer, so the link compiles the torch-free core: g++ with
`-std=c++17 -O2 -DTRAINLOOP_WITH_TORCH=0`, with the program's output shown in an execution pane.

The link is Compiler Explorer's `/clientstate/<base64 of the JSON state>` form (its lib/clientstate.ts: sessions, each
with a source, compilers and executors), so it needs no account and no stored short link. The base64 is the URL-safe
alphabet, which Compiler Explorer's decoder (Node's Buffer, 'base64') accepts; `decode(link)` reverses it.
"""
import argparse
import base64
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_EXAMPLE = ROOT / "examples" / "engine_basics" / "main.cpp"
DEFAULT_COMPILER = "g142"  # x86-64 gcc 14.2
OPTIONS = "-std=c++17 -O2 -DTRAINLOOP_WITH_TORCH=0"
BASE = "https://godbolt.org/clientstate/"
INCLUDE = re.compile(r'^#include [<"]trainloop\.hpp[>"]$', re.M)
MOVING_REFS = {"main", "master", "develop", "HEAD", "refs/heads/main", "refs/heads/master"}


def check_url(url):
    found = re.fullmatch(r"https://raw\.githubusercontent\.com/([^/]+)/([^/]+)/(.+)/single_include/trainloop\.hpp", url)
    if not found and not re.fullmatch(r"https://\S+/trainloop\.hpp", url):
        raise ValueError(f"'{url}' is not an https URL of trainloop.hpp (the single header)")
    if found and found.group(3) in MOVING_REFS:
        raise ValueError(f"'{url}' follows the branch '{found.group(3)}', which moves: pin the link to a release tag "
                         f"(…/{found.group(1)}/{found.group(2)}/vX.Y.Z/single_include/trainloop.hpp)")


def state_for(url, example, compiler):
    source = example.read_text()
    if len(INCLUDE.findall(source)) != 1:
        raise ValueError(f"{example}: expected one '#include <trainloop.hpp>' line to point at the URL")
    source = INCLUDE.sub(f"#include <{url}>", source)
    compiler_state = {"id": compiler, "options": OPTIONS, "libs": [],
                      "filters": {"binary": False, "commentOnly": True, "demangle": True, "directives": True,
                                  "execute": False, "intel": True, "labels": True, "trim": False}}
    return {"sessions": [{
        "id": 1,
        "language": "c++",
        "source": source,
        "compilers": [compiler_state],
        "executors": [{"compiler": dict(compiler_state), "arguments": "", "argumentsVisible": False, "stdin": "",
                       "stdinVisible": False, "compilerVisible": False, "compilerOutputVisible": True}],
    }]}


def encode(state):
    text = json.dumps(state, separators=(",", ":"), ensure_ascii=False)
    return BASE + base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii")


def decode(link):
    if not link.startswith(BASE):
        raise ValueError(f"not a Compiler Explorer clientstate link: {link[:60]}")
    return json.loads(base64.urlsafe_b64decode(link[len(BASE):].encode("ascii")).decode("utf-8"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw_url", help="the single header's raw URL at a release tag")
    parser.add_argument("example", nargs="?", default=str(DEFAULT_EXAMPLE), help="the program to open (torch-free)")
    parser.add_argument("--compiler", default=DEFAULT_COMPILER, help=f"Compiler Explorer's compiler id ({DEFAULT_COMPILER})")
    args = parser.parse_args()
    try:
        check_url(args.raw_url)
        print(encode(state_for(args.raw_url, pathlib.Path(args.example), args.compiler)))
    except (OSError, ValueError) as error:
        print(f"godbolt_link: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
