#!/usr/bin/env python3
"""Compiles every C++ block of README.md and docs/*.md, so the documentation cannot drift from the code.

All blocks go into one translation unit (one compile, not one per block), each in a namespace of its own:
  - a block with `int main` is a whole program: its #include lines move to the top, `main` is renamed;
  - a block with `#include <trainloop.hpp>` but no main is namespace-scope code;
  - any other block is a fragment, compiled as a function body. Fragments and namespace-scope blocks are read with
    `using namespace trainloop;`, as the docs write them. Names a fragment takes from the text around it are
    declared in an HTML comment right before the block, which the rendered page does not show:
        <!-- snippet-context
        torch::nn::Linear model(784, 10);
        -->
  - `<!-- snippet: namespace -->` before a fragment compiles it at namespace scope instead;
  - `<!-- snippet: skip (why) -->` before a block leaves it out (say why: a shell line in a C++ block, a sketch of
    code that is not trainloop's).

  python3 tools/check_doc_snippets.py [--cxx g++] [--keep FILE] [-- COMPILER FLAGS...]   compile (exit 1 naming the block)
  python3 tools/check_doc_snippets.py --list                                     list the blocks and their modes
"""
import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(\s*)```cpp\s*$")
DIRECTIVE = re.compile(r"<!--\s*snippet:\s*(\w+)(.*?)-->", re.S)
CONTEXT = re.compile(r"<!--\s*snippet-context\s*\n(.*?)-->", re.S)


def blocks():
    files = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            match = FENCE.match(lines[i])
            if not match:
                i += 1
                continue
            indent = len(match.group(1))
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            code = "\n".join(line[indent:] if line[:indent].strip() == "" else line for line in lines[start:j])
            # The directive and context comments sit in the lines just above the fence.
            above = "\n".join(lines[max(0, i - 12):i])
            last_close = above.rfind("-->")
            tail = above[above.rfind("<!--"):] if last_close != -1 and above.rstrip().endswith("-->") else ""
            mode, context = None, ""
            for found in DIRECTIVE.finditer(tail):
                mode = found.group(1)
            for found in CONTEXT.finditer(tail):
                context = found.group(1)
            yield path.relative_to(ROOT).as_posix(), start, code, mode, context
            i = j + 1


def classify(code, mode):
    if mode == "skip":
        return "skip"
    if re.search(r"\bint\s+main\s*\(", code):
        return "program"
    if mode == "namespace" or "#include <trainloop.hpp>" in code:
        return "namespace"
    return "fragment"


def translation_unit():
    head = ["#include <trainloop.hpp>", "#include <cstdio>", "#include <map>", "#include <string>", "#include <vector>"]
    body, names = [], []
    for n, (where, line, code, mode, context) in enumerate(blocks()):
        kind = classify(code, mode)
        names.append((where, line, kind))
        if kind == "skip":
            continue
        includes = [l for l in code.splitlines() if l.lstrip().startswith("#include")]
        rest = "\n".join(l for l in code.splitlines() if not l.lstrip().startswith("#include"))
        head.extend(l.strip() for l in includes if l.strip() not in head)
        body.append(f"// {where}:{line} ({kind})")
        body.append(f"namespace snippet_{n} {{")
        body.append(f'#line {line + 1} "{where}"')
        if kind == "program":
            body.append(re.sub(r"\bint\s+main\s*\(", "auto snippet_main(", rest))  # main needs no return
        elif kind == "namespace":
            body.append("using namespace trainloop;\n" + context + "\n" + rest)
        else:
            body.append("using namespace trainloop;\n[[maybe_unused]] void snippet() {\n" + context + "\n" + rest + "\n}")
        body.append(f"}}  // namespace snippet_{n}")
    return "\n".join(head) + "\n\n" + "\n".join(body) + "\n", names


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cxx", default="g++")
    parser.add_argument("flags", nargs="*", help="extra compiler flags (include paths, macros), after --")
    parser.add_argument("--keep", help="also write the generated TU here")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    source, names = translation_unit()
    if args.list:
        for where, line, kind in names:
            print(f"{where}:{line}: {kind}")
        return 0
    if args.keep:
        pathlib.Path(args.keep).write_text(source, encoding="utf-8")
    with tempfile.NamedTemporaryFile("w", suffix=".cpp", delete=False, encoding="utf-8") as tu:
        tu.write(source)
    command = [args.cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Wno-unused-variable",
               "-Wno-unused-but-set-variable", "-Wno-unused-parameter", "-Wno-unused-function",
               f"-I{ROOT}", *args.flags, tu.name]
    result = subprocess.run(command)
    pathlib.Path(tu.name).unlink()
    compiled = sum(1 for _, _, kind in names if kind != "skip")
    if result.returncode != 0:
        print(f"check_doc_snippets: the documentation's C++ blocks do not compile (above: file:line of the block)",
              file=sys.stderr)
        return 1
    print(f"check_doc_snippets: {compiled} C++ blocks compile ({len(names) - compiled} skipped, each saying why)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
