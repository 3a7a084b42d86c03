from pathlib import Path

from plannr_pipeline.storage import dictionary

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_data_dictionary_matches_the_tables():
    text = README.read_text()
    start, end = text.index(dictionary.BEGIN), text.index(dictionary.END) + len(dictionary.END)
    assert text[start:end] == dictionary.markdown(), (
        "regenerate: python -m plannr_pipeline.storage.dictionary"
    )
