"""pipeline/'s modules import one another without a cycle (read from the source, lazy imports
inside functions included: a cycle there still ties two modules into one)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# train_hooks uses train.checkpoints and train imports train_hooks: both files are part of the
# training code's fingerprint, so untangling them re-makes every published set (issue #25 step 1).
KNOWN = {frozenset({'pipeline.train', 'pipeline.train_hooks'})}


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the pipeline modules it imports (a name imported from a package counts as
    its submodule where one exists)."""
    files = {_name(p): p for p in (ROOT / 'pipeline').rglob('*.py')}
    graph = {}
    for name, path in files.items():
        package = name if path.name == '__init__.py' else name.rpartition('.')[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split('.')
                base = base[:len(base) - node.level + 1] if node.level else []
                target = '.'.join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f'{target}.{alias.name}'
                    edges.add(sub if sub in files else target)
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, found, counter = {}, {}, [], set(), [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_lazy_cycle():
    graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
    assert cycles(graph) == {frozenset('abc')}
    assert cycles({'a': {'b'}, 'b': set()}) == set()


def test_pipeline_has_no_import_cycle():
    graph = import_graph()
    assert {'pipeline.cli', 'pipeline.forkserver'} <= graph['pipeline.__main__']
    assert 'pipeline.cli' in graph['pipeline.forkserver']       # its children run the CLI
    assert 'pipeline.matrix' in graph['pipeline.aggregate.tables']  # `from .. import matrix`
    assert cycles(graph) - KNOWN == set()
