from lorapack.cli import run

run()
