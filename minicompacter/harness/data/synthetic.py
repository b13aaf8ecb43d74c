"""The synthetic GLUE-like suite: three tasks made by code from word lists and templates,
deterministic by seed, no download. Every notebook, test and the demo can run on them.

All sentences are lower case, words separated by single spaces (a comma is its own word),
built only from the words of `vocabulary()`. One example is drawn at a time from
`numpy.random.default_rng(seed)`; exact duplicates (of the sentence, or of the pair) are
dropped, and the first sizes[0] distinct examples are train, the next validation, the
last test, so no sentence (pair) is in two splits.

synthetic-sentiment (like SST-2; 0 negative, 1 positive). A clause is

    FRAME(noun) [NEGATOR] [MODIFIER] ADJECTIVE     "the movie was not very good"

FRAME from REVIEW_FRAMES, noun from one domain of DOMAINS (movies, products, restaurants),
ADJECTIVE from POSITIVE or NEGATIVE. Its polarity is the adjective's, flipped by a NEGATOR
("not", "never", "hardly", "far from"); a MODIFIER (INTENSIFIERS "very", "extremely", ...
or DOWNTONERS "somewhat", "a bit", ..., the latter only without a negator) never flips it.
A sentence is one clause (70%) or two clauses of one domain joined by "but" (30%), whose
polarities are opposite: the clause after "but" decides ("the food was bad but the service
was excellent" -> 1). The label is drawn first (fair coin), a negator is used in 40% of the
clauses, and the adjective is chosen to fit; `sentiment_label` re-derives the label from
the text alone.

synthetic-paraphrase (like MRPC/QQP; 0 not_equivalent, 1 equivalent). A clause has a
subject and an object (noun phrases "the [COUNT] [COLOUR] noun" over NOUNS, two different
nouns; COUNT makes it plural, COLOUR only on ANIMALS), a verb from VERBS, optionally a
place (PLACES) and a time (TIMES), and may be negated. It is rendered to text in one of 8
ways (`render`): active ("the dog chased the cat", "the dog did not chase the cat") or
passive ("the cat was chased by the dog"), adjuncts at the end or the last one moved to
the front ("yesterday , the dog chased the cat in the park"), and every slot in its base
form or its synonym (each entry of NOUNS, VERBS, PLACES, TIMES lists a base form and a
synonym, sometimes the same word). The meaning of a sentence is its clause.
sentence1 renders a random clause in a random way. Label 1 (fair coin): sentence2 renders
the same clause in another way that gives a different string. Label 0: sentence2 renders
the clause after one meaning change, drawn uniformly from those that apply (`MEANING_CHANGES`):
another subject noun, another object noun, subject and object swapped ("the cat chased the
dog"), negation added or removed, another count, another colour, another place, another
time (the last four only when the clause has one). A quarter of these keep sentence1's
rendering ("the dog chased the cat" / "the cat chased the dog"), the others use another
one, as paraphrases do, so that word overlap says little about the label.

synthetic-similarity (like STS-B; a float score in [0, 5]). A base clause has the slots
subject, verb, object, and each of place and time with probability 1/2: m = 3, 4 or 5
slots (no counts, colours or negation). k is drawn uniformly from 0..m; m - k slots,
chosen at random, get a different value (a noun in neither clause, another verb, place
or time). sentence1 renders the base clause, sentence2 the variant, each in a
random way (at k = m in another way, so the strings differ). The label is 5 * k / m rounded
to one decimal, halves up: m=3 gives 0, 1.7, 3.3, 5; m=4 gives 0, 1.3, 2.5, 3.8, 5; m=5
gives 0, 1, 2, 3, 4, 5. k = 0 pairs share nothing (unrelated, 0); k = m pairs are
paraphrases (5). Labels are stored as float32, as in GLUE's stsb.
"""

import dataclasses
from typing import Callable

import numpy as onp

# --- word lists (sorted; each a module-level tuple) ----------------------------------

DOMAINS = (  # what a review talks about; the two clauses of a "but" sentence share a domain
    ("acting", "cast", "dialogue", "ending", "film", "movie", "plot", "script", "soundtrack"),
    ("battery", "camera", "design", "keyboard", "laptop", "phone", "screen", "speaker"),
    ("dessert", "food", "menu", "pasta", "pizza", "service", "soup", "waiter"),
)
POSITIVE = ("amazing", "brilliant", "excellent", "fantastic", "good", "great", "impressive",
            "lovely", "nice", "outstanding", "pleasant", "superb", "wonderful")
NEGATIVE = ("annoying", "awful", "bad", "disappointing", "dreadful", "horrible", "lousy",
            "mediocre", "poor", "terrible", "unpleasant", "weak")
NEGATORS = ("far from", "hardly", "never", "not")          # flip the polarity
INTENSIFIERS = ("extremely", "really", "truly", "very")    # do not flip it
DOWNTONERS = ("a bit", "fairly", "rather", "somewhat")     # do not flip it; never after a negator
REVIEW_FRAMES = ("honestly the {} was", "i thought the {} was", "the {} is", "the {} was",
                 "this {} is")

# nouns: (singular, plural, synonym singular, synonym plural)
PEOPLE = (("boy", "boys", "lad", "lads"), ("child", "children", "kid", "kids"),
          ("doctor", "doctors", "physician", "physicians"),
          ("farmer", "farmers", "farmer", "farmers"), ("girl", "girls", "girl", "girls"),
          ("student", "students", "pupil", "pupils"),
          ("teacher", "teachers", "instructor", "instructors"),
          ("woman", "women", "lady", "ladies"))
ANIMALS = (("bird", "birds", "bird", "birds"), ("cat", "cats", "kitty", "kitties"),
           ("dog", "dogs", "dog", "dogs"), ("horse", "horses", "horse", "horses"),
           ("rabbit", "rabbits", "bunny", "bunnies"))
NOUNS = PEOPLE + ANIMALS
COLOURS = ("black", "brown", "grey", "white")              # on animals only
COUNTS = ("two", "three", "four", "five")                  # make the noun plural
# verbs (all asymmetric): ((base, past, participle), (synonym base, past, participle))
VERBS = ((("carry", "carried", "carried"), ("carry", "carried", "carried")),
         (("chase", "chased", "chased"), ("pursue", "pursued", "pursued")),
         (("feed", "fed", "fed"), ("feed", "fed", "fed")),
         (("follow", "followed", "followed"), ("trail", "trailed", "trailed")),
         (("greet", "greeted", "greeted"), ("welcome", "welcomed", "welcomed")),
         (("help", "helped", "helped"), ("assist", "assisted", "assisted")),
         (("hit", "hit", "hit"), ("strike", "struck", "struck")),
         (("hug", "hugged", "hugged"), ("embrace", "embraced", "embraced")),
         (("push", "pushed", "pushed"), ("shove", "shoved", "shoved")),
         (("see", "saw", "seen"), ("spot", "spotted", "spotted")),
         (("watch", "watched", "watched"), ("observe", "observed", "observed")))
PLACES = (("at school", "at the school"), ("at the station", "at the train station"),
          ("in the forest", "in the woods"), ("in the kitchen", "inside the kitchen"),
          ("in the park", "at the park"), ("in the street", "on the street"),
          ("near the river", "by the river"), ("on the beach", "on the shore"))
TIMES = (("at night", "during the night"), ("at noon", "at midday"),
         ("in the evening", "during the evening"), ("in the morning", "during the morning"),
         ("last week", "a week ago"), ("last year", "a year ago"), ("yesterday", "yesterday"))
TEMPLATE_WORDS = (",", "but", "by", "did", "not", "the", "was", "were")
# (passive, adjunct in front, synonyms): the 8 ways to render a clause
RENDERINGS = tuple((p, f, s) for p in (False, True) for f in (False, True) for s in (False, True))
MEANING_CHANGES = ("colour", "negation", "number", "object", "place", "subject", "swap", "time")
SIMILARITY_SLOTS = ("subject", "verb", "object", "place", "time")
MAX_EXAMPLES = 100_000     # per call, all splits together: a bound on generation time


def pick(rng, seq):
    """One element of a sequence, drawn with rng (never rng.choice: it turns strings into
    NumPy strings)."""
    return seq[int(rng.integers(len(seq)))]


# --- synthetic-sentiment -------------------------------------------------------------

def review_clause(rng, noun, polarity):
    """A review clause about noun with polarity +1 or -1 after negation."""
    negated = rng.random() < 0.4
    adjective = pick(rng, POSITIVE if (polarity > 0) != negated else NEGATIVE)
    modifiers = INTENSIFIERS if negated else INTENSIFIERS + DOWNTONERS
    modifier = pick(rng, modifiers) if rng.random() < 0.5 else ""
    words = (pick(rng, REVIEW_FRAMES).format(noun), pick(rng, NEGATORS) if negated else "",
             modifier, adjective)
    return " ".join(w for w in words if w)


def sentiment_example(rng):
    label = int(rng.integers(2))
    polarity = 1 if label else -1
    nouns = pick(rng, DOMAINS)
    if rng.random() < 0.3:          # "A but B", opposite polarities: B decides
        first, second = (nouns[int(i)] for i in rng.choice(len(nouns), 2, replace=False))
        sentence = (f"{review_clause(rng, first, -polarity)} but "
                    f"{review_clause(rng, second, polarity)}")
    else:
        sentence = review_clause(rng, pick(rng, nouns), polarity)
    return {"sentence": sentence, "label": label}


def sentiment_label(sentence):
    """The label the rules give a sentiment sentence, from its text alone: the clause after
    the last "but" decides; positive adjective xor a negator."""
    clause = f" {sentence.split(' but ')[-1]} "
    positive = any(f" {w} " in clause for w in POSITIVE)
    negated = any(f" {w} " in clause for w in NEGATORS)
    return int(positive != negated)


# --- clauses for the pair tasks ------------------------------------------------------
# A clause is a dict: subject and object (noun index, count or "", colour or ""), verb
# (index), place and time (index or None), negated (bool).

def noun_phrase(phrase, synonyms):
    noun, count, colour = phrase
    word = NOUNS[noun][(1 if count else 0) + (2 if synonyms else 0)]
    return " ".join(w for w in ("the", count, colour, word) if w)


def render(clause, passive, front, synonyms):
    """The clause as a sentence: active or passive voice, the last adjunct at the end or in
    front, each slot's base form or its synonym."""
    form = int(synonyms)
    base, past, participle = VERBS[clause["verb"]][form]
    subject = noun_phrase(clause["subject"], synonyms)
    obj = noun_phrase(clause["object"], synonyms)
    if passive:
        aux = ("were" if clause["object"][1] else "was") + (" not" if clause["negated"] else "")
        core = f"{obj} {aux} {participle} by {subject}"
    else:
        core = f"{subject} {'did not ' + base if clause['negated'] else past} {obj}"
    adjuncts = [forms[clause[slot]][form]
                for slot, forms in (("place", PLACES), ("time", TIMES)) if clause[slot] is not None]
    if front and adjuncts:
        return " ".join([adjuncts[-1], ",", core] + adjuncts[:-1])
    return " ".join([core] + adjuncts)


def random_clause(rng, *, decorated, p_adjunct):
    """decorated: counts, colours and negation may appear (paraphrase), or never (similarity)."""
    def phrase(noun):
        count = pick(rng, COUNTS) if decorated and rng.random() < 0.3 else ""
        animal = noun >= len(PEOPLE)
        colour = pick(rng, COLOURS) if decorated and animal and rng.random() < 0.6 else ""
        return (noun, count, colour)
    subject, obj = (int(i) for i in rng.choice(len(NOUNS), 2, replace=False))
    return {"subject": phrase(subject), "verb": int(rng.integers(len(VERBS))),
            "object": phrase(obj),
            "place": int(rng.integers(len(PLACES))) if rng.random() < p_adjunct else None,
            "time": int(rng.integers(len(TIMES))) if rng.random() < p_adjunct else None,
            "negated": decorated and rng.random() < 0.15}


def other_index(rng, n, excluded):
    return pick(rng, [i for i in range(n) if i not in excluded])


def change_meaning(rng, clause):
    """The clause after one meaning change, drawn uniformly from those that apply."""
    has = {"number": [s for s in ("subject", "object") if clause[s][1]],
           "colour": [s for s in ("subject", "object") if clause[s][2]]}
    applies = {"number": has["number"], "colour": has["colour"],
               "place": clause["place"] is not None, "time": clause["time"] is not None}
    kind = pick(rng, [k for k in MEANING_CHANGES if applies.get(k, True)])
    nouns = {clause["subject"][0], clause["object"][0]}
    if kind == "swap":
        return {**clause, "subject": clause["object"], "object": clause["subject"]}
    if kind == "negation":
        return {**clause, "negated": not clause["negated"]}
    if kind in ("subject", "object"):
        _, count, colour = clause[kind]
        noun = other_index(rng, len(NOUNS), nouns)
        return {**clause, kind: (noun, count, colour if noun >= len(PEOPLE) else "")}
    if kind in ("place", "time"):
        forms = PLACES if kind == "place" else TIMES
        return {**clause, kind: other_index(rng, len(forms), {clause[kind]})}
    slot = pick(rng, has[kind])                        # number or colour
    noun, count, colour = clause[slot]
    if kind == "number":
        count = pick(rng, [c for c in COUNTS if c != count])
    else:
        colour = pick(rng, [c for c in COLOURS if c != colour])
    return {**clause, slot: (noun, count, colour)}


def paraphrase_example(rng):
    clause = random_clause(rng, decorated=True, p_adjunct=0.6)
    rendering = pick(rng, RENDERINGS)
    sentence1 = render(clause, *rendering)
    label = int(rng.integers(2))
    if label:
        others = [s for s in (render(clause, *r) for r in RENDERINGS) if s != sentence1]
        sentence2 = pick(rng, others)
    else:
        if rng.random() >= 0.25:                      # a quarter keep sentence1's rendering
            rendering = pick(rng, [r for r in RENDERINGS if r != rendering])
        sentence2 = render(change_meaning(rng, clause), *rendering)
    return {"sentence1": sentence1, "sentence2": sentence2, "label": label}


# --- synthetic-similarity ------------------------------------------------------------

def similarity_example(rng):
    base = random_clause(rng, decorated=False, p_adjunct=0.5)
    slots = [s for s in SIMILARITY_SLOTS if base[s] is not None]       # m = 3, 4 or 5
    m = len(slots)
    k = int(rng.integers(m + 1))                                        # slots kept
    variant = dict(base)
    for i in sorted(int(i) for i in rng.choice(m, m - k, replace=False)):
        slot = slots[i]
        if slot in ("subject", "object"):
            used = {clause[s][0] for clause in (base, variant) for s in ("subject", "object")}
            variant[slot] = (other_index(rng, len(NOUNS), used), "", "")
        else:
            n = len({"verb": VERBS, "place": PLACES, "time": TIMES}[slot])
            variant[slot] = other_index(rng, n, {base[slot]})
    sentence1 = render(base, *pick(rng, RENDERINGS))
    renderings = [s for s in (render(variant, *r) for r in RENDERINGS) if s != sentence1]
    score = (100 * k + m) // (2 * m) / 10                # 5 k / m, one decimal, halves up
    return {"sentence1": sentence1, "sentence2": pick(rng, renderings), "label": score}


# --- the registry and the loader -----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SyntheticTask:
    """What a synthetic task looks like to the rest of the package."""
    columns: tuple          # the text columns: ("sentence",) or ("sentence1", "sentence2")
    num_labels: int         # classes; 1 for regression
    label_names: tuple      # class names by label id; () for regression
    metric: str             # the metric kind (metrics module): accuracy, accuracy_f1, ...
    generate: Callable = dataclasses.field(repr=False, default=None)  # rng -> one example


SYNTHETIC_TASKS = {
    "synthetic-sentiment": SyntheticTask(("sentence",), 2, ("negative", "positive"),
                                         "accuracy", sentiment_example),
    "synthetic-paraphrase": SyntheticTask(("sentence1", "sentence2"), 2,
                                          ("not_equivalent", "equivalent"), "accuracy_f1",
                                          paraphrase_example),
    "synthetic-similarity": SyntheticTask(("sentence1", "sentence2"), 1, (),
                                          "pearson_spearman", similarity_example),
}


def load_synthetic(name, *, seed=0, sizes=(2000, 500, 500)):
    """A synthetic task as a datasets.DatasetDict with "train", "validation" and "test" of
    sizes[0], sizes[1], sizes[2] distinct examples; the same seed gives the same data."""
    import datasets                     # (deferred: datasets takes ~1 s to import)

    if name not in SYNTHETIC_TASKS:
        raise ValueError(f"Unknown synthetic task {name!r}; known: {', '.join(SYNTHETIC_TASKS)}.")
    task = SYNTHETIC_TASKS[name]
    sizes = tuple(sizes)
    if len(sizes) != 3 or not all(isinstance(n, (int, onp.integer)) and not isinstance(n, bool)
                                  and n >= 1 for n in sizes):
        raise ValueError(f"sizes must be three positive integers (train, validation, test), "
                         f"got {sizes!r}.")
    total = int(sum(sizes))
    if total > MAX_EXAMPLES:
        raise ValueError(f"sizes {sizes} ask for {total} examples; {name} makes at most "
                         f"{MAX_EXAMPLES} per call. Ask for fewer.")
    rng = onp.random.default_rng(seed)
    examples, seen = [], set()
    for _ in range(20 * total):
        example = task.generate(rng)
        key = tuple(example[c] for c in task.columns)
        if key not in seen:
            seen.add(key)
            examples.append(example)
            if len(examples) == total:
                break
    else:
        raise ValueError(f"{name} produced only {len(examples)} distinct examples in "
                         f"{20 * total} draws, fewer than the {total} that sizes {sizes} ask "
                         f"for; its templates cannot make that many. Ask for fewer.")
    label = (datasets.ClassLabel(names=list(task.label_names)) if task.num_labels > 1
             else datasets.Value("float32"))
    features = datasets.Features({**{c: datasets.Value("string") for c in task.columns},
                                  "label": label})
    ends = onp.cumsum((0,) + sizes)
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict(
            {c: [e[c] for e in examples[a:b]] for c in task.columns + ("label",)},
            features=features)
        for split, a, b in zip(("train", "validation", "test"), ends[:-1], ends[1:])})


def vocabulary():
    """Every word the generators can use, sorted (the tiny tokenizer is built from it)."""
    def strings(x):
        return [x] if isinstance(x, str) else [s for item in x for s in strings(item)]
    lists = (DOMAINS, POSITIVE, NEGATIVE, NEGATORS, INTENSIFIERS, DOWNTONERS, REVIEW_FRAMES,
             NOUNS, COLOURS, COUNTS, VERBS, PLACES, TIMES, TEMPLATE_WORDS)
    return sorted({w for s in strings(lists) for w in s.replace("{}", " ").split()})
