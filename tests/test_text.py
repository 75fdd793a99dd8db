"""Sentence splitting shared by the chunkers, the extractive answerer and the judge."""

from ragline.text import sentence_spans


def split(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def test_hard_wrapped_prose_stays_one_sentence():
    text = "Green tea is best brewed at 70 to 80 degrees for one\nto three minutes. Sencha turns bitter."
    assert split(text) == ["Green tea is best brewed at 70 to 80 degrees for one\nto three minutes.",
                           "Sencha turns bitter."]


def test_blank_lines_records_and_list_items_split():
    text = "A paragraph ends here\n\nanother starts\nplanet: Mars; moons: 2\nplanet: Venus; moons: 0\n- item one\n- item two"
    assert split(text) == ["A paragraph ends here", "another starts\nplanet: Mars; moons: 2",
                           "planet: Venus; moons: 0", "- item one", "- item two"]


def test_sentence_punctuation_before_a_capital_or_digit():
    assert split("It rained. 3 left early. e.g. this stays") == ["It rained.", "3 left early. e.g. this stays"]
