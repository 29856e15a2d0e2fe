"""Entry point PyInstaller freezes into the self-contained ``devicetrust-agent`` executable."""

from agent.cli import main

if __name__ == "__main__":
    main()
