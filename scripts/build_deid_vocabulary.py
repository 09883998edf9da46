"""Build the derived data of the descriptor cleaner and the verifier's name detector.

    python scripts/build_deid_vocabulary.py [--corpus ../shared/corpus]

Writes, into agent/deid/data/:

* ``person-names.txt`` - given and family names of every locale of Faker's person
  provider (MIT licence), folded (lower case, no accents, Latin letters); the verifier's
  detector of person names in free text, and the filter below.
* ``vocabulary/derived.txt`` - every word of the code meanings of DICOM's own coding
  schemes as pydicom ships them (DCM, SNOMED CT, RadLex, FMA, LOINC ...), minus words
  that are also person names (eponyms: "Parkinson", "Willis"), unless the hand-made
  ``core.txt``/``terms.txt`` list them.
* ``name-words.txt`` - person names that are also ordinary words of DICOM (of its code
  meanings or attribute names: "lung", "sharp", "field"): the cleaner and the verifier
  look for every *other* listed name in kept technical text (Content Description,
  Sequence Name, Ethnic Group, code strings ...), where a name of someone the header does
  not name (a nurse, a relative) would otherwise stay.

With ``--corpus`` it also prints the descriptor words of the real corpus (and pydicom's
test files) that no list holds yet, for a person to review and add to ``terms.txt``:
corpus descriptors hold investigators' and sites' names ("Research^Rorden_Prisma"), so
they are never added unread.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.deid.folding import fold  # noqa: E402

DATA = ROOT / "agent" / "deid" / "data"
_WORD = re.compile(r"[^\W_]+")
_SCHEMES = ("DCM", "SCT", "RADLEX", "FMA", "NEU", "LN", "UCUM", "NCIt", "MDC", "IBSI")
_DESCRIPTORS = ("SeriesDescription", "ProtocolName", "StudyDescription", "SequenceName",
                "PerformedProcedureStepDescription", "RequestedProcedureDescription",
                "CodeMeaning", "ImageType", "ScanOptions", "ROIName")


def person_names() -> set[str]:
    import faker.providers.person as person

    names: set[str] = set()
    for info in pkgutil.iter_modules(person.__path__):
        module = importlib.import_module(f"faker.providers.person.{info.name}")
        provider = getattr(module, "Provider", None)
        for attr in ("first_names", "first_names_male", "first_names_female",
                     "first_names_nonbinary", "last_names", "last_names_male",
                     "last_names_female", "first_romanized_names", "last_romanized_names"):
            values = getattr(provider, attr, ())
            if not isinstance(values, (tuple, list, dict)):
                continue  # a property computed per instance
            for name in values:
                for part in re.split(r"[\s\-'’.]+", str(name)):
                    folded = fold(part)
                    if len(folded) >= 2 and not folded.isdigit():
                        names.add(folded)
    return names


def words_of(path: Path) -> set[str]:
    out: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        for w in line.split("#", 1)[0].split():
            out.add(fold(w))
    return out


def code_meaning_words() -> set[str]:
    from pydicom.sr._concepts_dict import concepts

    words: set[str] = set()
    for scheme in _SCHEMES:
        for codes in concepts.get(scheme, {}).values():
            for meaning, _cids in codes.values():
                for w in _WORD.findall(meaning):
                    folded = fold(w)
                    if len(folded) >= 3 and not folded.isdigit():
                        words.add(folded)
    return words


def dictionary_words() -> set[str]:
    from pydicom.datadict import DicomDictionary

    words: set[str] = set()
    for entry in DicomDictionary.values():
        words.update(fold(w) for w in _WORD.findall(str(entry[2])))
    return words


def corpus_words(corpus: Path) -> set[str]:
    import pydicom
    from pydicom.data import get_testdata_files

    files = [Path(p) for p in get_testdata_files()]
    files += [p for p in (corpus / "dicom").rglob("*") if p.is_file()]
    words: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's test files are odd on purpose
        for path in files:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                for elem in ds.iterall():
                    if elem.keyword in _DESCRIPTORS:
                        words.update(fold(w) for w in _WORD.findall(str(elem.value)))
            except Exception:  # noqa: BLE001 -- odd test files: skipped
                continue
    return words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None)
    args = parser.parse_args()
    names = person_names()
    (DATA / "person-names.txt").write_text(
        "# Given and family names of every locale of Faker's person provider (MIT licence,\n"
        "# github.com/joke2k/faker), folded; built by scripts/build_deid_vocabulary.py.\n"
        + "\n".join(sorted(names)) + "\n", encoding="utf-8")
    curated = words_of(DATA / "vocabulary" / "core.txt") | words_of(
        DATA / "vocabulary" / "terms.txt")
    derived = {w for w in code_meaning_words() if w not in names or w in curated} - curated
    (DATA / "vocabulary" / "derived.txt").write_text(
        "# Words of the code meanings of DICOM's coding schemes (pydicom's concept\n"
        "# dictionaries: DCM, SNOMED CT, RadLex, FMA, LOINC ...), minus person names;\n"
        "# built by scripts/build_deid_vocabulary.py - do not edit, add to terms.txt.\n"
        + "\n".join(sorted(derived)) + "\n", encoding="utf-8")
    ordinary = names & (code_meaning_words() | dictionary_words() | curated)
    (DATA / "name-words.txt").write_text(
        "# Person names (person-names.txt) that are also words of DICOM's code meanings or\n"
        "# attribute names, or imaging terms: not taken for a person's name in kept\n"
        "# technical text; built by scripts/build_deid_vocabulary.py - do not edit.\n"
        + "\n".join(sorted(ordinary)) + "\n", encoding="utf-8")
    print(f"{len(names)} person names, {len(derived)} derived terms, "
          f"{len(ordinary)} names that are ordinary words")
    if args.corpus is not None:
        known = curated | derived
        new = sorted(w for w in corpus_words(args.corpus) if w and w not in known)
        print("corpus words not in the vocabulary (review before adding to terms.txt):")
        print(" ".join(new))


if __name__ == "__main__":
    main()
