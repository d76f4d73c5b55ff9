"""Password rules for tourists' accounts, after NIST SP 800-63B: long enough, not a known
common password, not the login itself; no composition rules (they make passwords worse)."""

from __future__ import annotations

MIN_LENGTH = 10
MAX_LENGTH = 128

# Common passwords at least MIN_LENGTH long (shorter ones fail the length rule), from the
# published lists of leaked passwords, including those common on Chinese sites.
COMMON = frozenset(
    [
        "1234567890",
        "0123456789",
        "9876543210",
        "12345678910",
        "123456789a",
        "a123456789",
        "1234567890a",
        "qwertyuiop",
        "qwerty1234",
        "qwerty12345",
        "1q2w3e4r5t",
        "1qaz2wsx3edc",
        "zxcvbnm123",
        "asdfghjkl1",
        "password1",
        "password12",
        "password123",
        "password1234",
        "passw0rd12",
        "p@ssw0rd12",
        "iloveyou12",
        "iloveyou123",
        "woaini1314",
        "woaini520",
        "5201314520",
        "1314520520",
        "qq123456789",
        "abc1234567",
        "abcd123456",
        "abc123456789",
        "aa123456789",
        "1111111111",
        "0000000000",
        "8888888888",
        "6666666666",
        "1234512345",
        "1122334455",
        "1234554321",
        "147258369a",
        "1472583690",
        "3141592653",
        "admin12345",
        "administrator",
        "welcome123",
        "sunshine12",
        "football12",
        "baseball12",
        "princess12",
        "dragon1234",
        "monkey1234",
        "letmein123",
        "trustno123",
        "superman12",
        "starwars12",
        "computer12",
        "whatever12",
    ]
)


def password_problem(password: str, login: str) -> tuple[str, str] | None:
    """(rule, message) for the first rule a new password breaks, or None."""
    if len(password) < MIN_LENGTH:
        return "min-length", f"at least {MIN_LENGTH} characters"
    if password.lower() in COMMON:
        return "common-password", "this password is on lists of common passwords"
    if len(set(password)) < 4:
        return "too-simple", "use more than three different characters"
    name = login.split("@", 1)[0].lower()
    if len(name) >= 4 and name in password.lower():
        return "contains-login", "the password must not contain the email or phone number"
    return None
