import subprocess
import sys

from layrot import __version__
from layrot.cli import main


def test_version_matches_distribution(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"layrot {__version__}"
    assert __version__ != "0+unknown"


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from layrot.cli import build_parser; build_parser().format_help();"
        "heavy = [m for m in ('torch', 'ray', 'pyarrow', 'plotly') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
