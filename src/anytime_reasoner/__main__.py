from anytime_reasoner.cli import main

if __name__ == "__main__":  # a spawned process (a rollout worker) imports this module without running it
    raise SystemExit(main())
