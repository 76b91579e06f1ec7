"""Test helpers: small English and Chinese corpora of documents, written by the tests themselves."""
import numpy as np

EN_WORDS = ("the crane is flying over the river a driver came to the bank he just left city did she see it "
            "yes they played game café naïve Berlin isn't").split()


ZH_CHARS = list("我们去北京天气很好你来吗他们在河边看见一只鹤飞过城市司机来到银行")


def write_english(path, documents=120, seed=0):
    rng = np.random.default_rng(seed)
    docs = [" ".join(" ".join(rng.choice(EN_WORDS, rng.integers(3, 9))).capitalize() + rng.choice([".", "!", "?"])
                     for _ in range(rng.integers(2, 5))) for _ in range(documents)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")


def write_chinese(path, documents=120, seed=1):
    rng = np.random.default_rng(seed)
    docs = ["".join("".join(rng.choice(ZH_CHARS, rng.integers(3, 9))) + rng.choice(list("。！？"))
                    for _ in range(rng.integers(2, 5))) for _ in range(documents)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
