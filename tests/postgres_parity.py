"""`make test-postgres`: the Phoenix-backed pull, snapshot and promote tests, once with Phoenix on sqlite and once
on a throwaway PostgreSQL (tests/fixtures/postgres.py), and a check that both pass the same tests.

Exit 0 when the two pass lists are equal and not empty and neither run failed; otherwise 1, printing what differs
(a test skipped on PostgreSQL because the server could not start counts as not passed: the skip reason is shown).

    SELFIMPROVE_PHOENIX_PYTHON=.venv-phoenix/bin/python .venv/bin/python tests/postgres_parity.py [pytest args]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the tests that pull from, snapshot out of, and promote into a real Phoenix
SELECTION = ["test_pull_phoenix.py", "test_telemetry_phoenix.py", "test_nested_phoenix.py",
             "test_promote_phoenix.py", "test_phoenix_server.py"]


def run(database: str, report: Path, extra: list[str]) -> tuple[int, dict[str, str]]:
    """(pytest's exit code, test id -> outcome) for one database."""
    args = [sys.executable, "-m", "pytest", "-m", "phoenix", f"--phoenix-db={database}", f"--junitxml={report}",
            "-p", "no:cacheprovider", *[str(HERE / name) for name in SELECTION], *extra]
    print(f"== Phoenix on {database}: {' '.join(args[1:])}", flush=True)
    code = subprocess.run(args, cwd=HERE.parent, check=False).returncode
    outcomes: dict[str, str] = {}
    if report.is_file():
        for case in ET.parse(report).getroot().iter("testcase"):
            test = f"{case.get('classname')}::{case.get('name')}"
            kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            detail = next((child.get("message", "") for child in case if child.tag in kinds), "")
            outcomes[test] = "passed" if not kinds else f"{kinds[0]}: {detail[:300]}"
    return code, outcomes


def main() -> int:
    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="pg-parity-") as tmp:
        sqlite_code, on_sqlite = run("sqlite", Path(tmp) / "sqlite.xml", extra)
        pg_code, on_pg = run("postgres", Path(tmp) / "postgres.xml", extra)
    passed_sqlite = {t for t, o in on_sqlite.items() if o == "passed"}
    passed_pg = {t for t, o in on_pg.items() if o == "passed"}
    print(f"\npassed on sqlite: {len(passed_sqlite)} of {len(on_sqlite)}; passed on PostgreSQL: {len(passed_pg)} "
          f"of {len(on_pg)}")
    for test in sorted(passed_sqlite - passed_pg):
        print(f"  passes on sqlite only: {test} (PostgreSQL: {on_pg.get(test, 'not run')})")
    for test in sorted(passed_pg - passed_sqlite):
        print(f"  passes on PostgreSQL only: {test} (sqlite: {on_sqlite.get(test, 'not run')})")
    same = passed_sqlite == passed_pg and bool(passed_pg) and sqlite_code == pg_code == 0
    print(f"same pass list: the {len(passed_pg)} tests pass on both sqlite and PostgreSQL" if same else
          f"pass lists differ or a run failed (pytest exit codes: sqlite {sqlite_code}, PostgreSQL {pg_code})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
