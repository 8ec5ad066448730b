#!/usr/bin/env python3
"""Tests of .ci/check-graph on temporary fixtures: python3 .ci/check_graph_test.py"""

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "check-graph"


def load_script():
    sys.dont_write_bytecode = True  # no __pycache__ beside the script
    loader = SourceFileLoader("check_graph", str(SCRIPT))
    module = module_from_spec(spec_from_loader("check_graph", loader))
    sys.modules["check_graph"] = module
    loader.exec_module(module)
    return module


cg = load_script()

ARCH = """# Architecture

## Crate graph

Prose.

<!-- crate-graph -->
- `spur-schemas` → nothing
- `spur-keys` → nothing
- `spur-broker` → nothing
- `spur-telemetry` → nothing
- `spur-kafka` → `spur-schemas`
- `spur-lake` → `spur-schemas`
- `spur-audience` → `spur-lake`, `spur-schemas`
- `spur-collector` → `spur-kafka`, `spur-keys`, `spur-schemas`, `spur-telemetry`
- `spur-processor` → `spur-kafka`, `spur-keys`, `spur-lake`, `spur-schemas`, `spur-telemetry`
- `spur-query` → `spur-audience`, `spur-lake`, `spur-schemas`, `spur-telemetry`
- `spur-dispatch` → `spur-audience`, `spur-kafka`, `spur-keys`, `spur-lake`, `spur-schemas`, `spur-telemetry`
- `spur-gdpr` → `spur-audience`, `spur-keys`, `spur-lake`, `spur-schemas`
- `spur-testkit` → `spur-lake`, `spur-schemas` (dev-dependency only)
- `spur` (the binary) → any
<!-- /crate-graph -->

## Code map
"""

CRATE_DIRS = {
    "spur-schemas": "schemas",
    "spur-lake": "lake",
    "spur-audience": "audience",
    "spur-query": "query",
    "spur-dispatch": "dispatch",
    "spur-testkit": "testkit",
    "spur-unlisted": "unlisted",
    "spur": ".",
}


class Fixture:
    """A workspace on disk and the `cargo metadata` dict that describes it."""

    def __init__(self, test: unittest.TestCase):
        self._tmp = tempfile.TemporaryDirectory()
        test.addCleanup(self._tmp.cleanup)
        self.root = Path(self._tmp.name)
        self.packages: dict[str, dict] = {}

    def crate(self, name, deps=(), files=None, binary=False):
        """deps: names (normal) or (name, kind); files: {path under src/: source}."""
        directory = self.root / CRATE_DIRS.get(name, name)
        root_file = "main.rs" if binary else "lib.rs"
        files = dict(files or {})
        files.setdefault(root_file, "")
        for rel, text in files.items():
            path = directory / "src" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        dependencies = []
        for dep in deps:
            dep_name, kind = (dep, None) if isinstance(dep, str) else dep
            dependencies.append({
                "name": dep_name,
                "kind": kind,
                "path": str(self.root / CRATE_DIRS.get(dep_name, dep_name)),
            })
        # and one registry dependency, which is not a workspace edge
        dependencies.append({"name": "serde", "kind": None, "source": "registry+https://…"})
        self.packages[name] = {
            "name": name,
            "id": f"path+file://{directory}#{name}@0.1.0",
            "manifest_path": str(directory / "Cargo.toml"),
            "dependencies": dependencies,
            "targets": [
                {"kind": ["bin" if binary else "lib"], "name": name,
                 "src_path": str(directory / "src" / root_file)},
                {"kind": ["test"], "name": "it", "src_path": str(directory / "tests/it/main.rs")},
            ],
        }

    def metadata(self):
        return {
            "packages": list(self.packages.values()),
            "workspace_members": [p["id"] for p in self.packages.values()],
            "version": 1,
        }

    def check(self, arch=ARCH):
        return cg.check(self.metadata(), arch, self.root)


def allowed_workspace(fx: Fixture):
    fx.crate("spur-schemas")
    fx.crate("spur-lake", ["spur-schemas"])
    fx.crate("spur-audience", ["spur-lake", "spur-schemas", ("spur-testkit", "dev")])
    fx.crate("spur-query", ["spur-audience", "spur-schemas", ("spur-lake", "dev")])
    fx.crate("spur-testkit", ["spur-lake", "spur-schemas"])
    fx.crate("spur", ["spur-query", "spur-lake", ("spur-testkit", "dev"), ("spur-schemas", "build")],
             binary=True)


class CrateGraph(unittest.TestCase):
    def test_allowed_graph_passes(self):
        fx = Fixture(self)
        allowed_workspace(fx)
        errors, summary = fx.check()
        self.assertEqual(errors, [])
        self.assertEqual(summary, "crate graph ok: 6 crates, 13 edges; no import circles in 6 files")

    def test_forbidden_edge_fails_and_names_both_crates(self):
        fx = Fixture(self)
        allowed_workspace(fx)
        fx.crate("spur-dispatch", ["spur-audience"])
        fx.crate("spur-query", ["spur-audience", "spur-dispatch"])
        errors, _ = fx.check()
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("forbidden dependency: spur-query → spur-dispatch (normal)", errors[0])
        self.assertIn(
            "ARCHITECTURE.md allows spur-query → spur-audience, spur-lake, spur-schemas, "
            "spur-telemetry", errors[0])

    def test_forbidden_dev_and_build_edges_fail(self):
        fx = Fixture(self)
        allowed_workspace(fx)
        fx.crate("spur-lake", ["spur-schemas", ("spur-audience", "dev"), ("spur-query", "build")])
        errors, _ = fx.check()
        self.assertEqual(len(errors), 2, errors)
        self.assertIn("spur-lake → spur-audience (dev)", errors[0])
        self.assertIn("spur-lake → spur-query (build)", errors[1])
        self.assertIn("allows spur-lake → spur-schemas", errors[1])

    def test_nothing_means_nothing(self):
        fx = Fixture(self)
        allowed_workspace(fx)
        fx.crate("spur-schemas", ["spur-lake"])
        errors, _ = fx.check()
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("spur-schemas → spur-lake (normal); ARCHITECTURE.md allows "
                      "spur-schemas → nothing", errors[0])

    def test_unlisted_crate_fails(self):
        fx = Fixture(self)
        allowed_workspace(fx)
        fx.crate("spur-unlisted", ["spur-schemas"])
        errors, _ = fx.check()
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("crate spur-unlisted is not in ARCHITECTURE.md's crate graph", errors[0])

    def test_dev_only_crate_as_normal_dependency_fails(self):
        fx = Fixture(self)
        allowed_workspace(fx)
        fx.crate("spur-query", ["spur-audience", "spur-testkit"])
        errors, _ = fx.check()
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("forbidden dependency: spur-query → spur-testkit (normal)", errors[0])
        self.assertIn("only as a dev-dependency", errors[0])

    def test_dev_only_crate_is_not_normal_even_for_any(self):
        fx = Fixture(self)
        allowed_workspace(fx)
        fx.crate("spur", ["spur-testkit"], binary=True)
        errors, _ = fx.check()
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("spur → spur-testkit (normal)", errors[0])

    def test_missing_markers_is_a_clear_error(self):
        fx = Fixture(self)
        allowed_workspace(fx)
        with self.assertRaisesRegex(cg.GraphError, "crate-graph"):
            fx.check(arch="# Architecture\n\n## Code map\n")

    def test_unreadable_line_is_an_error(self):
        arch = ARCH.replace("- `spur-keys` → nothing", "- `spur-keys` depends on nothing")
        with self.assertRaisesRegex(cg.GraphError, "spur-keys"):
            cg.parse_allowed(arch)

    def test_parse_allowed(self):
        rules = cg.parse_allowed(ARCH)
        self.assertEqual(len(rules), 14)
        self.assertEqual(rules["spur-schemas"].allowed, frozenset())
        self.assertIsNone(rules["spur"].allowed)
        self.assertTrue(rules["spur-testkit"].dev_only)
        self.assertFalse(rules["spur-lake"].dev_only)
        self.assertEqual(rules["spur-testkit"].allowed, {"spur-lake", "spur-schemas"})

    def test_the_real_architecture_md_parses(self):
        rules = cg.parse_allowed((HERE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8"))
        self.assertEqual(
            {n: (r.allowed, r.dev_only) for n, r in rules.items()},
            {n: (r.allowed, r.dev_only) for n, r in cg.parse_allowed(ARCH).items()})


class ImportCircles(unittest.TestCase):
    def audience(self, files):
        fx = Fixture(self)
        allowed_workspace(fx)
        fx.crate("spur-audience", ["spur-lake", "spur-schemas"], files=files)
        return fx.check()

    def test_two_files_importing_each_other_fail(self):
        errors, _ = self.audience({
            "lib.rs": "mod a;\nmod b;\npub use a::Y;\n",
            "a.rs": "use crate::b::X;\npub struct Y;\n",
            "b.rs": "use crate::a::Y;\npub struct X;\n",
        })
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("import circle in spur-audience: src/a.rs → src/b.rs → src/a.rs", errors[0])
        self.assertIn("src/a.rs:1 uses crate::b::X", errors[0])
        self.assertIn("src/b.rs:1 uses crate::a::Y", errors[0])

    def test_grouped_uses_inline_paths_and_longer_circles(self):
        errors, _ = self.audience({
            "lib.rs": "mod engine;\nmod ledger;\nmod views;\n",
            "engine.rs": "use crate::{error::Error, ledger::{Ledger, verify as v}};\n",
            "ledger.rs": "fn f() { let x = crate::views::render(1); }\n",
            "views/mod.rs": "pub fn render() -> crate::engine::Engine { todo!() }\n",
            "error.rs": "pub struct Error;\n",
        })
        self.assertEqual(len(errors), 1, errors)
        self.assertIn(
            "src/engine.rs → src/ledger.rs → src/views/mod.rs → src/engine.rs", errors[0])

    def test_super_resolves_to_sibling_or_parent(self):
        fx = Fixture(self)
        fx.crate("spur-audience", files={
            "lib.rs": "mod score;\nmod views;\n",
            "views.rs": "pub struct View;\n",
            "score/mod.rs": "mod model;\nmod sql;\npub struct Model;\n",
            "score/model.rs": "use super::Model;\n",  # no score/Model.rs: the parent
            "score/sql.rs": "use super::model::Score;\nuse super::super::views::View;\n",
        })
        graph, files = cg.file_graph(cg.crate_files(fx.packages["spur-audience"]))
        self.assertEqual(files, 5)
        self.assertEqual({a: sorted(b) for a, b in graph.items()}, {
            "src/lib.rs": [],
            "src/views.rs": [],
            "src/score/mod.rs": [],
            "src/score/model.rs": ["src/score/mod.rs"],
            "src/score/sql.rs": ["src/score/model.rs", "src/views.rs"],
        })
        errors, _ = self.audience({
            "lib.rs": "mod score;\n",
            "score/mod.rs": "mod model;\nmod sql;\nuse self::sql::Query;\npub struct Model;\n",
            "score/model.rs": "pub struct Score;\n",
            "score/sql.rs": "use super::{model::Score, Model};\npub struct Query;\n",
        })
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("src/score/mod.rs → src/score/sql.rs → src/score/mod.rs", errors[0])

    def test_super_and_parent_reexports_and_root_reexports_are_no_circle(self):
        errors, summary = self.audience({
            "lib.rs": textwrap.dedent("""\
                mod error;
                pub mod score;
                pub use error::{Error, Result};
                pub use crate::score::{Model, Score};
                pub(crate) use score::model::helper;
                """),
            "error.rs": "pub struct Error;\npub type Result<T> = std::result::Result<T, Error>;\n",
            "score/mod.rs": textwrap.dedent("""\
                pub mod model;
                pub use model::Score;
                pub use self::model::helper;
                pub(crate) use crate::score::model::Other;
                pub struct Model;
                pub fn new() -> crate::Result<Model> { Ok(Model) }
                """),
            "score/model.rs": textwrap.dedent("""\
                use super::*;
                use super::Model;
                use crate::{Error, Result};
                pub struct Score(Model);
                pub struct Other;
                pub fn helper() -> Result<()> { Err(crate::Error) }
                """),
        })
        self.assertEqual(errors, [])
        self.assertIn("no import circles in 9 files", summary)

    def test_cfg_test_modules_do_not_count(self):
        errors, _ = self.audience({
            "lib.rs": "mod engine;\nmod ledger;\n",
            "engine.rs": textwrap.dedent("""\
                use crate::ledger::Ledger;
                pub struct Engine;

                #[cfg(test)]
                mod tests {
                    use super::*;
                    use crate::ledger::fixtures;
                    fn helper() { if true { let _ = "}"; } }
                }
                """),
            "ledger.rs": textwrap.dedent("""\
                pub struct Ledger;

                #[cfg(test)]
                #[allow(unused)]
                mod tests {
                    use super::*;
                    use crate::engine::Engine;
                }

                #[cfg(test)]
                use crate::engine::Engine as E;

                #[cfg(test)]
                mod more_tests;
                """),
            "ledger/more_tests.rs": "use crate::engine::Engine;\n",
            "tests.rs": "use crate::engine::Engine;\nuse crate::ledger::Ledger;\n",
        })
        self.assertEqual(errors, [])

    def test_comments_and_strings_do_not_count(self):
        errors, _ = self.audience({
            "lib.rs": "mod engine;\nmod ledger;\n",
            "engine.rs": "use crate::ledger::Ledger;\n",
            "ledger.rs": textwrap.dedent("""\
                //! See [`crate::engine::Engine`].
                /// Unlike crate::engine::Engine, /* nested /* crate::engine */ */
                /* use crate::engine::Engine; */
                pub struct Ledger;
                const SQL: &str = "SELECT crate::engine::x";
                const RAW: &str = r#"use crate::engine::Engine; "quoted""#;
                const C: char = '"';
                fn f<'a>(x: &'a str) -> &'a str { x }
                """),
        })
        self.assertEqual(errors, [])

    def test_bin_crate_circle(self):
        fx = Fixture(self)
        allowed_workspace(fx)
        fx.crate("spur", ["spur-query"], binary=True, files={
            "main.rs": "mod privacy;\nmod settings;\n",
            "privacy.rs": "use crate::settings::Settings;\npub struct Retention;\n",
            "settings.rs": "pub struct Settings { r: crate::privacy::Retention }\n",
        })
        errors, _ = fx.check()
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("import circle in spur: src/privacy.rs → src/settings.rs → src/privacy.rs",
                      errors[0])


class Script(unittest.TestCase):
    def test_is_executable_python(self):
        self.assertTrue(os.access(SCRIPT, os.X_OK), "chmod +x .ci/check-graph")
        self.assertEqual(SCRIPT.read_text().splitlines()[0], "#!/usr/bin/env python3")

    def test_main_reports_cargo_failure(self):
        env = dict(os.environ, CARGO="/nonexistent/cargo")
        done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True,
                              text=True, timeout=60)
        self.assertEqual(done.returncode, 2, done.stderr)
        self.assertIn("cargo metadata failed", done.stderr)


if __name__ == "__main__":
    unittest.main()
