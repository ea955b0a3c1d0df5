#!/usr/bin/env python3
"""Fails when modules of one crate depend on each other in a cycle.

A module's dependencies are the sibling modules its code names through `crate::<module>` or
through a name the crate root re-exports (`pub use <module>::Name`). Test modules are left out.
Usage: module_cycles.py [CRATES_DIR] (default: crates)."""
import glob
import os
import re
import sys


def modules(src):
    """Top-level modules of a crate (a file, or a folder with its files) and their text."""
    found = {}
    for path in glob.glob(os.path.join(src, "*.rs")):
        name = os.path.basename(path)[:-3]
        if name not in ("lib", "main"):
            found[name] = open(path).read()
    for folder in glob.glob(os.path.join(src, "*/")):
        name = os.path.basename(folder.rstrip("/"))
        found[name] = "".join(open(p).read() for p in glob.glob(os.path.join(folder, "*.rs")))
    return found


def reexports(src):
    """Names the crate root re-exports, with the module each comes from."""
    root = os.path.join(src, "lib.rs")
    if not os.path.exists(root):
        return {}
    out = {}
    for m in re.finditer(r"pub use (\w+)::(\{[^}]*\}|\w+)", open(root).read(), re.S):
        for name in re.findall(r"\w+", m.group(2)):
            out[name] = m.group(1)
    return out


def edges(found, names):
    graph = {m: set() for m in found}
    for module, text in found.items():
        text = re.sub(r"#\[cfg\(test\)\]\s*mod tests.*", "", text, flags=re.S)
        text = re.sub(r"//.*", "", text)
        for path in re.findall(r"crate::((?:\w+::)*\w+|\{[^}]*\})", text):
            for item in re.findall(r"[\w:]+", path):
                head = item.split("::")[0]
                target = head if head in found else names.get(head)
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "crates"
    found_any = False
    for src in sorted(glob.glob(os.path.join(root, "*", "src"))):
        graph = edges(modules(src), reexports(src))
        for component in cycles(graph):
            found_any = True
            links = ", ".join(f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component)
            print(f"{src}: module cycle {component}: {links}", file=sys.stderr)
    if found_any:
        print("move the shared item (often an error type) into a module of its own", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
