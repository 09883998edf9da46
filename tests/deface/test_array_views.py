"""No numpy view of a SimpleITK image that nobody holds.

``sitk.GetArrayViewFromImage(f(...))`` returns a view of the buffer of an image that is
freed as soon as the call returns: what is read from it is whatever the allocator put
there since. The skin fit read such a view of its field-of-view mask, so the same head got
a slightly different new face between runs; presence and no-face checks read them too.
Views are for images held in a name; a temporary gets a copy (``GetArrayFromImage``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def views_of_temporaries(source: str) -> list[int]:
    """Line numbers of GetArrayViewFromImage calls whose image is an expression's value."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "GetArrayViewFromImage" and not isinstance(
                    node.args[0], (ast.Name, ast.Attribute, ast.Subscript)):
                lines.append(node.lineno)
    return lines


def test_the_finder_finds_a_view_of_a_temporary() -> None:
    assert views_of_temporaries("a = sitk.GetArrayViewFromImage(sitk.Abs(img)) > 0") == [1]
    assert views_of_temporaries("a = sitk.GetArrayViewFromImage(img)\n"
                                "b = sitk.GetArrayViewFromImage(t.head)") == []


def test_no_view_of_a_temporary_image() -> None:
    found = [f"{p.relative_to(ROOT)}:{line}"
             for folder in ("agent", "cloud", "bench")
             for p in sorted((ROOT / folder).rglob("*.py"))
             for line in views_of_temporaries(p.read_text(encoding="utf-8"))]
    assert not found, f"views of images nobody holds (use GetArrayFromImage): {found}"
