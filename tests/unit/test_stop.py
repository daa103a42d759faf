from outcrop.engines.llamacpp.stop import StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[str, str | None]:
    out = []
    for p in pieces:
        text, hit = matcher.feed(p)
        out.append(text)
        if hit:
            return "".join(out), hit
    return "".join(out) + matcher.flush(), None


def test_stop_split_across_pieces_is_never_emitted():
    m = StopMatcher(["END"])
    assert m.feed("hello E") == ("hello ", None)
    assert m.feed("N") == ("", None)
    assert m.feed("D tail") == ("", "END")


def test_false_alarm_prefix_is_released():
    m = StopMatcher(["END"])
    assert feed_all(m, ["an E", "x", "it"]) == ("an Exit", None)


def test_earliest_of_several_stops_wins():
    m = StopMatcher(["\nQ:", "5"])
    assert feed_all(m, ["1, 2, 3, 4, 5, 6\nQ:"]) == ("1, 2, 3, 4, ", "5")


def test_no_stops_passes_text_through():
    m = StopMatcher([])
    assert m.feed("abc") == ("abc", None)
    assert m.flush() == ""
