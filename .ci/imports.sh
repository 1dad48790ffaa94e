#!/usr/bin/env bash
# The import graph between the top-level modules of src/ (issue 20): derived from the code's own
# `crate::` paths (`use crate::{a, b::c}`, `crate::x::y(...)`, `$crate::` in macros, and
# `super::super::x` climbing to the crate root), comments left out. Fails, printing the circle
# and the lines that make it, when two top-level modules reach each other. No network, no build.
#
#   .ci/imports.sh            # check; prints the floors (each module above what it imports)
#   .ci/imports.sh --graph    # also print every edge with the number of references
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import os, re, sys

SRC = "src"
graph_wanted = "--graph" in sys.argv[1:]

# Top-level modules: what lib.rs declares.
lib = open(os.path.join(SRC, "lib.rs"), encoding="utf-8").read()
modules = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", lib, re.M))
if not modules:
    sys.exit("imports.sh: no `mod` declarations found in src/lib.rs")

def module_path(path):
    """The module path of a source file, e.g. src/snapshot/table.rs -> ['snapshot', 'table']."""
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return rel

def strip_comments(text):
    """The text without comments and string contents (line numbers kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    out.append("\n" if text[i] == "\n" else "")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 8]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or text.startswith("'\\u{", i):
            j = text.find("'", i + 2)
            out.append("' '")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)

def braced_heads(text, start):
    """The first path segment of each item of the `{...}` group opening at `start`."""
    depth, item, heads, i = 0, "", [], start
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c == "}":
            depth -= 1
            if depth == 0:
                heads.append(item)
                break
        elif c == "," and depth == 1:
            heads.append(item)
            item = ""
            i += 1
            continue
        if depth >= 1:
            item += c
        i += 1
    names = []
    for h in heads:
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", h)
        if m:
            names.append(m.group(1))
    return names

def inline_mods(text):
    """The (start, end) spans of the inline `mod x { ... }` blocks of a file."""
    spans = []
    for m in re.finditer(r"(?<![A-Za-z0-9_])mod\s+[A-Za-z_][A-Za-z0-9_]*\s*\{", text):
        depth, i = 0, m.end() - 1
        while i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        spans.append((m.start(), i))
    return spans

PATH = re.compile(r"(?<![A-Za-z0-9_])(\$?crate|(?:super\s*::\s*)+)\s*::\s*(\{|[A-Za-z_][A-Za-z0-9_]*)")

edges = {}  # (from, to) -> [(file, line)]
for root, _, files in os.walk(SRC):
    for f in sorted(files):
        if not f.endswith(".rs"):
            continue
        path = os.path.join(root, f)
        mpath = module_path(path)
        if not mpath or mpath[0] not in modules:
            continue  # lib.rs, main.rs, build.rs
        text = strip_comments(open(path, encoding="utf-8").read())
        inline = inline_mods(text)
        for m in PATH.finditer(text):
            head = m.group(1)
            if head.endswith("crate"):
                base = []
            else:
                # `super::` climbs from the module the path stands in: the file's, plus each
                # inline `mod x { ... }` around it. Only a climb to the crate root leaves it.
                depth = len(mpath) + sum(1 for s, e in inline if s < m.start() < e)
                if head.count("super") != depth:
                    continue
            targets = braced_heads(text, m.start(2)) if m.group(2) == "{" else [m.group(2)]
            line = text.count("\n", 0, m.start()) + 1
            for t in targets:
                if t in modules and t != mpath[0]:
                    edges.setdefault((mpath[0], t), []).append((path, line))

graph = {m: set() for m in modules}
for a, b in edges:
    graph[a].add(b)

if graph_wanted:
    for (a, b), refs in sorted(edges.items()):
        print(f"{a} -> {b}  ({len(refs)})")

# Strongly connected components (Tarjan); any with two or more modules holds a circle.
index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in sorted(graph[v]):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        comps.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in sorted(graph):
    if v not in index:
        visit(v)

def a_circle(comp):
    """One circle through the component's first module, as a list of modules."""
    members, start = set(comp), comp[0]
    prev, queue = {start: None}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    return comp

bad = [c for c in comps if len(c) > 1]
if bad:
    print("imports.sh: import circle between top-level modules of src/ (see src/lib.rs § Invariants):")
    for comp in bad:
        circle = a_circle(comp)
        print("  " + " -> ".join(circle))
        for a, b in zip(circle, circle[1:]):
            for path, line in edges[(a, b)][:3]:
                print(f"    {a} -> {b}: {path}:{line}")
            if len(edges[(a, b)]) > 3:
                print(f"    {a} -> {b}: … {len(edges[(a, b)]) - 3} more")
    sys.exit(1)

# No circle: print the floors, lowest first (a module sits one floor above the highest it imports).
floor = {}
def floor_of(v):
    if v not in floor:
        floor[v] = 1 + max((floor_of(w) for w in graph[v]), default=-1)
    return floor[v]
for v in graph:
    floor_of(v)
for f in range(max(floor.values()) + 1):
    names = sorted(v for v in floor if floor[v] == f)
    print(f"floor {f}: {' '.join(names)}")
print(f"imports.sh: {len(modules)} top-level modules, {len(edges)} edges, no circle")
PY
