"""What Determined 0.38.1 lacks; each piece says what it works around and when it can go."""
