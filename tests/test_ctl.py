"""bot4ctl's words become control requests: sub-commands, a leading symbol, key=value."""
import pytest

from bot4d.ctl import to_request


@pytest.mark.parametrize("words,want", [
    (["status"], ("status", {})),
    (["books", "BTCUSDT"], ("books", {"symbol": "BTCUSDT"})),
    (["books", "BTCUSDT", "depth=10"], ("books", {"symbol": "BTCUSDT", "depth": "10"})),
    (["limits"], ("limits", {})),
    (["limits", "show"], ("limits", {})),
    (["limits", "set", "BTCUSDT", "max_position", "0.02"],
     ("limits-set", {"symbol": "BTCUSDT", "key": "max_position", "value": "0.02"})),
    (["limits", "set", "max_daily_loss", "100"], ("limits-set", {"key": "max_daily_loss", "value": "100"})),
    (["journal", "lag"], ("journal-lag", {})),
    (["resume"], ("resume", {})),
    (["resume", "ETHUSDT"], ("unpause", {"symbol": "ETHUSDT"})),
    (["pause", "ETHUSDT"], ("pause", {"symbol": "ETHUSDT"})),
    (["cancel-all"], ("cancel-all", {})),
])
def test_words_to_requests(words, want):
    assert to_request(words[0], words[1:]) == want


@pytest.mark.parametrize("words,msg", [
    (["limits", "frob"], "limits show | limits set"),
    (["limits", "set", "x"], "limits set [SYMBOL] KEY VALUE"),
    (["journal", "size"], "journal lag"),
    (["books", "A", "B"], "one instrument at a time"),
    (["books", "=x"], "key=value"),
])
def test_bad_words_get_a_sentence(words, msg):
    with pytest.raises(ValueError, match=msg.replace("|", r"\|").replace("[", r"\[").replace("]", r"\]")):
        to_request(words[0], words[1:])
