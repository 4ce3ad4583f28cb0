"""Digits: the game this example server plays, with no gRPC in it.

The model must find the answer of the problem it was given (the leased problem's reference
answer, e.g. 46 for "12+34="). Each model turn is a guess: the last run of digits in the
turn. A right guess ends the episode with reward 1. A wrong one is answered with a hint in
the style of Bulls and Cows: " 1b0c:" says one digit is right and in the right place (a
bull) and no other digit of the guess appears elsewhere in the answer (a cow). A turn with
no digits is answered " ?:". The run's turn cap (`[episode] max_turns`) bounds the game; an
episode cut there scores 0.

    >>> hint("46", "45")
    ' 1b0c:'
    >>> hint("46", "64")
    ' 0b2c:'
    >>> hint("123", "1")
    ' 1b0c:'
    >>> last_number("so it is 4 6, no: 46")
    '46'
    >>> last_number("no idea") is None
    True
"""

from collections import Counter
import re


def last_number(turn):
    """The last run of digits in a turn, or None."""
    runs = re.findall(r"[0-9]+", turn)
    return runs[-1] if runs else None


def hint(secret, guess):
    """Bulls (right digit, right place) and cows (right digit, wrong place) as ' XbYc:'."""
    bulls = sum(1 for s, g in zip(secret, guess) if s == g)
    common = sum((Counter(secret) & Counter(guess)).values())
    return f" {bulls}b{common - bulls}c:"


class Digits:
    """One episode of the game."""

    def __init__(self, prompt, answer):
        answer = answer.strip()
        if not answer.isdigit() or len(answer) > 12:
            raise ValueError(
                f"answer {answer!r} is not a number of at most 12 digits: "
                "the digits game plays numeric tasks (addition, multiplication, guess)"
            )
        self.secret = answer
        self.observation = prompt

    def step(self, action):
        """(observation, reward, done) for the model's turn `action`."""
        guess = last_number(action)
        if guess is None:
            return " ?:", 0.0, False
        if int(guess) == int(self.secret):
            return "", 1.0, True
        return hint(self.secret, guess), 0.0, False


if __name__ == "__main__":
    import doctest

    failed, _ = doctest.testmod()
    raise SystemExit(1 if failed else 0)
