import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsched import segments
from smsched.errors import UsageError
from smsched.templates import compile_template


def render(text, name="Ana", phone="+5511987654321", **fields):
    return compile_template(text).render(name, phone, fields)


def test_placeholders_fallbacks_and_literal_braces():
    assert render("Olá {name}, {cidade}!", cidade="Manaus") == "Olá Ana, Manaus!"
    assert render("Olá {nome} ({telefone})") == "Olá Ana (+5511987654321)"
    assert render("Em {cidade|sua cidade}") == "Em sua cidade"
    assert render("Em {cidade|sua cidade}", cidade="Belém") == "Em Belém"
    assert render("{{literal}} e {{{name}}}") == "{literal} e {Ana}"
    assert render("{Nome Completo}", nome_completo="Ana Maria") == "Ana Maria"
    assert compile_template("{name|cliente}").render(None, "+1", {}) == "cliente"


@pytest.mark.parametrize("text, message", [
    ("Olá {name", "unclosed '{' at character 5 of the message; write {{ for a literal brace"),
    ("Olá name}", "stray '}' at character 9 of the message; write }} for a literal brace"),
    ("Olá {}", "empty placeholder {} at character 5; write {{ for a literal brace"),
])
def test_template_errors_say_where(text, message):
    with pytest.raises(UsageError) as error:
        compile_template(text)
    assert str(error.value) == message


@pytest.mark.parametrize("text, expected", [
    ("", ("GSM-7", 0, 1)),
    ("a" * 160, ("GSM-7", 160, 1)),
    ("a" * 161, ("GSM-7", 161, 2)),
    ("a" * 306, ("GSM-7", 306, 2)),
    ("a" * 307, ("GSM-7", 307, 3)),
    ("€" * 80, ("GSM-7", 160, 1)),              # extension characters take two septets
    ("€" * 81, ("GSM-7", 162, 2)),
    ("a" * 152 + "€", ("GSM-7", 154, 1)),       # 154 septets still fit one segment (<= 160)
    ("a" * 160 + "€", ("GSM-7", 162, 2)),
    ("a" * 152 + "€" + "a" * 8, ("GSM-7", 162, 2)),  # the escape is not split across segments
    ("é à ü Ñ", ("GSM-7", 7, 1)),               # these accents are in GSM-7
    ("ç", ("UCS-2", 1, 1)),
    ("ã" * 70, ("UCS-2", 70, 1)),
    ("ã" * 71, ("UCS-2", 71, 2)),
    ("ã" * 134, ("UCS-2", 134, 2)),
    ("ã" * 135, ("UCS-2", 135, 3)),
    ("😀" * 35, ("UCS-2", 70, 1)),              # an emoji is two UTF-16 units
    ("😀" * 36, ("UCS-2", 72, 2)),
    ("a" * 66 + "😀" + "a" * 10, ("UCS-2", 78, 2)),  # the pair is not split: 66 + 2 > 67
])
def test_segments_match_hand_counts(text, expected):
    assert tuple(segments.cost(text)) == expected


def test_portuguese_accents_more_than_double_a_long_message_and_gsm7_fixes_it():
    text = "Promoção de pão quentinho: só hoje, às 18h, na padaria do João. Não perca! " * 2
    assert segments.cost(text) == ("UCS-2", len(text), 3)
    transliterated = segments.to_gsm7(text)
    assert transliterated.startswith("Promocao de pao quentinho: so hoje, às 18h, na padaria do Joao. Nao perca!")
    assert segments.cost(transliterated) == ("GSM-7", len(text), 1)


def test_transliteration_of_quotes_dashes_and_what_has_no_equivalent():
    assert segments.to_gsm7("“Oi” – ‘tchau’… 😀") == '"Oi" - \'tchau\'... ?'


@given(st.text(max_size=500))
def test_transliterated_text_is_always_gsm7(text):
    assert segments.is_gsm7(segments.to_gsm7(text))
