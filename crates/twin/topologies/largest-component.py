#!/usr/bin/env python3
"""Write the largest connected component of a meshnet-lab network JSON, compactly.

Usage: largest-component.py IN.json OUT.json

Community maps hold islands (nodes whose uplink was down when the map was taken); the
twin measures one connected mesh, so the built-in topologies keep the largest component.
Node ids are renumbered 0..N-1 in their original order; names, positions and every link
field (source_tq, target_tq, type) are kept as they are. One link per line, so a diff
reads.
"""
import collections
import json
import sys


def main(src, dst):
    with open(src, encoding="utf-8") as f:
        data = json.load(f)
    # A map can list a node twice (Berlin's lists 132 ids more than once): the first entry counts.
    unique = {}
    for node in data["nodes"]:
        unique.setdefault(node["id"], node)
    data["nodes"] = list(unique.values())
    adjacency = collections.defaultdict(set)
    for link in data["links"]:
        adjacency[link["source"]].add(link["target"])
        adjacency[link["target"]].add(link["source"])
    seen, best = set(), []
    for node in data["nodes"]:
        if node["id"] in seen:
            continue
        component, stack = [], [node["id"]]
        seen.add(node["id"])
        while stack:
            u = stack.pop()
            component.append(u)
            for v in adjacency[u]:
                if v not in seen:
                    seen.add(v)
                    stack.append(v)
        if len(component) > len(best):
            best = component
    keep = set(best)
    nodes = [n for n in data["nodes"] if n["id"] in keep]
    renumber = {n["id"]: i for i, n in enumerate(nodes)}
    links = []
    for link in data["links"]:
        if link["source"] in keep and link["target"] in keep:
            link = dict(link, source=renumber[link["source"]], target=renumber[link["target"]])
            links.append(link)
    nodes = [dict(n, id=renumber[n["id"]]) for n in nodes]
    with open(dst, "w", encoding="utf-8") as f:
        f.write('{"nodes": [\n')
        f.write(",\n".join(json.dumps(n, ensure_ascii=False, sort_keys=True) for n in nodes))
        f.write('\n],\n"links": [\n')
        f.write(",\n".join(json.dumps(l, sort_keys=True) for l in links))
        f.write("\n]}\n")
    print(f"{dst}: {len(nodes)} of {len(data['nodes'])} distinct nodes, {len(links)} of {len(data['links'])} links")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
