"""The question set: what a class asks, by subject, each with its checker and, where a class would have one, the
class context the tutor sees (the teacher's topic and recent transcript). Questions about the class itself with no
context must be answered honestly ("not sure, ask your teacher").
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.tutor_eval.checkers import Checker, Forms, Honest, Value, Words


@dataclass(frozen=True)
class Question:
    subject: str
    text: str
    checker: Checker
    topic: str | None = None
    transcript: tuple[str, ...] = ()
    computable: bool = False  # the aim: every computable question right


def _c(subject: str, text: str, checker: Checker, **kw: object) -> Question:
    return Question(subject, text, checker, computable=True, **kw)  # type: ignore[arg-type]


ROOTS_LESSON = ("Today we solve quadratic equations. Look at the board: x^2 - 9 = 0. "
                "We want the values of x that make it true.",)
HOMEWORK = ("Before you go: the homework on page 42 is due on Friday. Do exercises one to ten.",
            "Next week's quiz covers fractions and decimals, so practise those.")

QUESTIONS: list[Question] = [
    # arithmetic
    _c("arithmetic", "What is 7 times 8?", Value(("56",))),
    _c("arithmetic", "What is the square root of 81?", Value(("9",))),
    _c("arithmetic", "What is 15% of 200?", Value(("30",))),
    _c("arithmetic", "What is 144 divided by 12?", Value(("12",))),
    _c("arithmetic", "What is 3/4 + 1/6?", Forms(("11/12",))),
    _c("arithmetic", "What is 12 * (3 + 4) - 5?", Value(("79",))),
    _c("arithmetic", "What is 2 to the power of 10?", Value(("1024",))),
    _c("arithmetic", "What is 1,250 + 3,785?", Value(("5035",))),
    _c("arithmetic", "If I increase 80 by 25%, what do I get?", Value(("100",))),
    _c("arithmetic", "What is 0.5 times 0.2?", Value(("0.1",))),
    _c("arithmetic", "What is 17 minus 29?", Value(("-12",))),
    # algebra
    _c("algebra", "What are the roots of x^2 - 5x + 6 = 0?", Value(("2", "3"))),
    _c("algebra", "Solve 2x + 3 = 11", Value(("4",))),
    _c("algebra", "Solve x + y = 10 and x - y = 2", Value(("6", "4"))),
    _c("algebra", "Factor x^2 + 5x + 6", Forms(("(x+2)(x+3)", "(x+3)(x+2)"))),
    _c("algebra", "Expand (x + 2)^2", Forms(("x^2+4x+4",))),
    _c("algebra", "Simplify (x^2 - 1)/(x - 1)", Forms(("x+1",))),
    _c("algebra", "Solve 3x - 7 = 2x + 5", Value(("12",))),
    _c("algebra", "Solve x^2 = 49", Value(("-7", "7"))),
    _c("algebra", "What does this equation mean?", Value(("-3", "3")), transcript=ROOTS_LESSON),
    # calculus
    _c("calculus", "What is the derivative of x^3 + 2x?", Forms(("3x^2+2",))),
    _c("calculus", "Differentiate sin(x)", Forms(("cos(x)", "cosx"))),
    _c("calculus", "Integrate x^2 from 0 to 3", Value(("9",))),
    _c("calculus", "What is the integral of 2x?", Forms(("x^2",))),
    _c("calculus", "What is the derivative of e^(2x)?", Forms(("2exp(2x)", "2e^(2x)", "2e^2x"))),
    _c("calculus", "What is the second derivative of x^4?", Forms(("12x^2",))),
    _c("calculus", "Integrate cos(x) from 0 to pi/2", Value(("1",))),
    # physics
    _c("physics", "Convert 72 km/h to m/s", Value(("20",))),
    _c("physics", "How many meters are in 3.5 kilometers?", Value(("3500",))),
    _c("physics", "Convert 100 degrees Fahrenheit to Celsius", Value(("37.78",))),
    _c("physics", "How many seconds are in 2 hours?", Value(("7200",))),
    _c("physics", "Convert 5 kg to grams", Value(("5000",))),
    Question("physics", "What is Newton's second law?", Words(("force", "mass", "acceleration"))),
    Question("physics", "What is the SI unit of force?", Words(("newton",))),
    Question("physics", "What is the acceleration due to gravity on Earth?", Words(("9.8",))),
    Question("physics", "A car travels 120 km in 2 hours. What is its average speed?", Value(("60",)),
             transcript=("Average speed is the distance travelled divided by the time it took.",)),
    # chemistry
    Question("chemistry", "What is the chemical symbol for sodium?", Words(("na",))),
    Question("chemistry", "What is the chemical formula of water?", Forms(("H2O", "H₂O"))),
    Question("chemistry", "What is the pH of pure water?", Value(("7",))),
    Question("chemistry", "What is the atomic number of carbon?", Value(("6",))),
    Question("chemistry", "Which gas do plants take in for photosynthesis?", Words(("carbon dioxide|co2",))),
    Question("chemistry", "What is an ion?", Words(("electron", "charge")),
             transcript=("An ion is an atom that has gained or lost electrons, so it carries an electric charge.",)),
    Question("chemistry", "What is a covalent bond?", Words(("shar", "electron")), topic="Chemical bonding",
             transcript=("In a covalent bond two atoms share a pair of electrons.",
                         "In an ionic bond one atom gives electrons to the other.")),
    # biology
    Question("biology", "What is the powerhouse of the cell?", Words(("mitochondri",))),
    Question("biology", "What do red blood cells carry?", Words(("oxygen",))),
    Question("biology", "What is photosynthesis?", Words(("light", "glucose|sugar|food|energy"))),
    Question("biology", "What is DNA?", Words(("genetic",)),
             transcript=("DNA is the molecule that carries the genetic instructions of every living thing.",)),
    Question("biology", "How many chromosomes do humans have?", Value(("46",))),
    Question("biology", "What is osmosis?", Words(("water", "membrane")),
             transcript=("Osmosis is the movement of water across a membrane, from where there is more water "
                         "to where there is less.",)),
    Question("biology", "Which organ pumps blood around the body?", Words(("heart",))),
    # history
    Question("history", "In which year did World War II end?", Value(("1945",))),
    Question("history", "Who was the first president of the United States?", Words(("washington",))),
    Question("history", "Why did the Roman Empire fall?", Words(("invasion|invad", "econom")),
             topic="The fall of Rome",
             transcript=("Historians give several reasons for the fall of the Western Roman Empire: invasions by "
                         "other peoples, economic trouble, and political instability.",)),
    Question("history", "In which year did Columbus first reach the Americas?", Value(("1492",))),
    Question("history", "Who wrote the Declaration of Independence?", Words(("jefferson",))),
    Question("history", "What was the Magna Carta?", Words(("1215|king",)),
             transcript=("The Magna Carta, sealed in 1215, limited the power of the English king.",)),
    Question("history", "In which year did the Berlin Wall fall?", Value(("1989",))),
    # language
    Question("language", 'What is the past tense of "go"?', Words(("went",))),
    Question("language", 'What is a synonym for "happy"?',
             Words(("glad|joyful|cheerful|content|delighted|pleased|joyous|merry",))),
    Question("language", 'What is the plural of "mouse"?', Words(("mice",))),
    Question("language", "What is a metaphor?", Words(("another|compar|is something",)),
             transcript=("A metaphor says that one thing is another thing, like 'time is a thief', to compare "
                         "them without using like or as.",)),
    Question("language", "What is a noun?", Words(("person|people", "place", "thing"))),
    Question("language", 'What is the opposite of "ancient"?', Words(("modern|new",))),
    Question("language", "What is alliteration?", Words(("sound|letter", "repeat|repetition")),
             transcript=("Alliteration is the repetition of the same first sound in words close together, like "
                         "'Peter Piper picked'.",)),
    # the class itself: grounded in what was said, honest when nothing was
    Question("class", "When is the homework due?", Honest()),
    Question("class", "What did the teacher say about the test?", Honest()),
    Question("class", "When is the homework due?", Words(("friday",)), transcript=HOMEWORK),
    Question("class", "What page is the homework on?", Value(("42",)), transcript=HOMEWORK),
    Question("class", "What topic are we studying today?", Words(("fraction",)), topic="Fractions and decimals"),
    Question("class", "Will the quiz include fractions?", Words(("fraction",), ("not",)), transcript=HOMEWORK),
]

SUBJECTS = list(dict.fromkeys(q.subject for q in QUESTIONS))
