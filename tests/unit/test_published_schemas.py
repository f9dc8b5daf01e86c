from devtools.schemas import rendered


def test_published_schemas_and_examples_match_the_models():
    stale = [str(path) for path, text in rendered().items() if not path.exists() or path.read_text() != text]
    assert not stale, f"run `python -m devtools.schemas` to republish: {stale}"
