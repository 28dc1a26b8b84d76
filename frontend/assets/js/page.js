// Simple pages (the mailbox, errors): only the navigation depends on the session.
import { session } from './layout.js';

session();
