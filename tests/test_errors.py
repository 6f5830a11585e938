"""IPS text is untrusted: what `tame` makes of it before a log line or a page shows it."""

from __future__ import annotations

import pytest

from exporter.errors import MAX_TEXT, forget_traceback, tame


@pytest.mark.parametrize(("text", "tamed"), [
    ("Unexpected subelement {ns}includeWaitingJobs", "Unexpected subelement {ns}includeWaitingJobs"),
    ("echo: <password>Pa55</password> and <ns1:password xmlns:ns1='x'>Pa55</ns1:password>",
     "echo: <password>***</password> and <ns1:password xmlns:ns1='x'>***</ns1:password>"),
    ("<PASSWORD>\nany thing\n</PASSWORD >", "<PASSWORD>***</PASSWORD >"),
    ("user demo, password Pa55, again Pa55!", "user demo, password ***, again ***!"),
    ("at line 1\r\n    at com.scene7.X(X.java:10)\n", "at line 1 at com.scene7.X(X.java:10)"),
    ("bell\x07 escape\x1b[31m del\x7f tab\tkept", "bell? escape?[31m del? tab\tkept"),
])
def test_passwords_are_masked_and_the_text_kept_on_one_line(text, tamed):
    assert tame(text, ("Pa55",)) == tamed


def test_an_empty_secret_masks_nothing_and_long_text_is_cut():
    assert tame("nothing to hide", ("",)) == "nothing to hide"
    exact = "x" * MAX_TEXT
    assert tame(exact) == exact
    cut = tame("y" * (MAX_TEXT + 1))
    assert len(cut) == MAX_TEXT == 512 and cut == "y" * (MAX_TEXT - 1) + "…"
    # Masking comes first: a secret across the cut is not left half shown.
    assert tame("z" * (MAX_TEXT - 3) + "Pa55word", ("Pa55word",)) == "z" * (MAX_TEXT - 3) + "***"


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_the_frames_of_an_error_its_cause_and_its_context_are_all_dropped():
    cause, context = raised(ValueError("cause")), raised(KeyError("context"))
    by_cause = raised(RuntimeError("by cause"))
    by_cause.__cause__ = cause
    by_context = raised(RuntimeError("by context"))
    by_context.__context__ = context
    for error, earlier in ((by_cause, cause), (by_context, context)):
        assert error.__traceback__ is not None and earlier.__traceback__ is not None
        forget_traceback(error)
        assert error.__traceback__ is None and earlier.__traceback__ is None
