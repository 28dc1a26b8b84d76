// Real-browser end-to-end test of the microchat pages, run by scripts/e2e.sh:
//   node frontend/e2e/chat.spec.mjs
// Env: E2E_FRONTEND_URL (the pages), E2E_SCREENSHOTS (a directory), E2E_PLAYWRIGHT
// (path of the playwright-core package), CHROMIUM (the browser binary).
// Two browser contexts, alice (A) and bob (B), walk through the core of the chat. Each
// step is reported; the last line is `e2e: N passed, M failed`.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { deflateSync } from 'node:zlib';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.E2E_PLAYWRIGHT || 'playwright-core');

const BASE = (process.env.E2E_FRONTEND_URL || 'http://127.0.0.1:8081').replace(/\/$/, '');
const SHOTS = process.env.E2E_SCREENSHOTS || 'target/e2e';
const TIMEOUT = 15_000;
mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

const results = [];
/** Users made by later steps, screenshotted too when a step fails. */
const laterUsers = [];
let broken = false;

async function step(name, body) {
  if (broken) {
    results.push({ name, ok: false, error: 'not run: an earlier step failed' });
    console.log(`  SKIP ${name}`);
    return;
  }
  const started = Date.now();
  try {
    await body();
    results.push({ name, ok: true });
    console.log(`  ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    results.push({ name, ok: false, error });
    broken = true;
    const n = results.length;
    for (const user of [alice, bob, ...laterUsers]) {
      await user.page.screenshot({ path: path.join(SHOTS, `failed-${n}-${user.name}.png`), fullPage: true }).catch(() => {});
    }
    console.log(`  FAIL ${name}\n       ${String(error?.stack || error).split('\n').slice(0, 6).join('\n       ')}`);
  }
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function newUser(name) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 }, locale: 'en-GB' });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`${name}: page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !/Failed to load resource|401|WebSocket/.test(message.text())) {
      problems.push(`${name}: console: ${message.text()}`);
    }
  });
  return { name, context, page, problems };
}

const alice = await newUser('alice');
const bob = await newUser('bob');
const password = 'correct horse battery';

async function register(user, screenshot) {
  const { page } = user;
  await page.goto(`${BASE}/register`);
  await page.getByLabel('Username').fill(user.name);
  await page.getByLabel('Email').fill(`${user.name}@example.com`);
  await page.getByLabel('Password').fill(password);
  if (screenshot) await shot(page, 'register');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL(`${BASE}/chat`);
  await page.locator('#connection[data-state="open"]').waitFor();
}

const person = (page, username) => page.locator(`#people li[data-username="${username}"]`);
const messageText = (page, text) => page.locator('#messages li.message .body', { hasText: text });

await step('bob and alice register and land on the chat, live', async () => {
  await register(bob, false);
  await register(alice, true);
  await alice.page.getByText('Signed in as alice').waitFor();
  // alice sees bob online (he is on the chat page).
  await person(alice.page, 'bob').and(alice.page.locator('[data-online="true"]')).waitFor();
});

await step('alice starts a conversation with bob; it shows up for bob', async () => {
  await alice.page.getByRole('button', { name: 'Message bob' }).click();
  await alice.page.locator('#conv-title', { hasText: 'bob' }).waitFor();
  await alice.page.getByText('No messages yet. Say hello!').waitFor();
  // bob learns about it over the socket (a membership frame), no reload.
  await bob.page.locator('#dm-list button.conv', { hasText: 'alice' }).waitFor();
  // ... and that alice is online, though she came after him.
  await person(bob.page, 'alice').and(bob.page.locator('[data-online="true"]')).waitFor();
});

await step('messages and typing appear live on both sides', async () => {
  await alice.page.getByLabel('Message', { exact: true }).fill('Hello Bob — ça va?');
  await alice.page.keyboard.press('Enter');
  await messageText(alice.page, 'Hello Bob — ça va?').waitFor();
  // bob has not opened it: an unread badge.
  await bob.page.locator('#dm-list button.conv .badge', { hasText: '1' }).waitFor();
  await bob.page.locator('#dm-list button.conv', { hasText: 'alice' }).click();
  await messageText(bob.page, 'Hello Bob — ça va?').waitFor();
  // bob types: alice sees it.
  await bob.page.getByLabel('Message', { exact: true }).pressSequentially('Hi Al', { delay: 30 });
  await alice.page.locator('#typing', { hasText: 'bob is typing…' }).waitFor();
  await bob.page.getByLabel('Message', { exact: true }).pressSequentially('ice, good to see you.', { delay: 10 });
  await bob.page.getByRole('button', { name: 'Send' }).click();
  await messageText(alice.page, 'Hi Alice, good to see you.').waitFor();
  await messageText(bob.page, 'Hi Alice, good to see you.').waitFor();
  const pending = await bob.page.locator('#messages li.pending').count();
  expect(pending === 0, `bob has ${pending} unconfirmed messages`);
  const count = await alice.page.locator('#messages li.message').count();
  expect(count === 2, `alice sees ${count} messages, not 2`);
});

await step("bob's read receipt shows for alice", async () => {
  // bob read alice's message when he opened the conversation.
  const mine = alice.page.locator('#messages li.message.mine', { hasText: 'Hello Bob' });
  await mine.locator('.receipt', { hasText: 'Seen' }).waitFor();
  await alice.page.getByText('This is the start of the conversation.').waitFor();
  expect(!(await alice.page.locator('#older').isVisible()), '"Load older messages" shows at the start');
  await shot(alice.page, 'chat');
  await bob.page.setViewportSize({ width: 360, height: 740 });
  await shot(bob.page, 'chat-360px');
  const overflow = await bob.page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  expect(!overflow, 'the chat page scrolls sideways at 360 px');
  await bob.page.setViewportSize({ width: 1200, height: 800 });
});

await step('the network drops and comes back: alice reconnects and catches up', async () => {
  await alice.context.setOffline(true);
  // The page notices (the browser's offline event closes the socket).
  await alice.page.locator('#connection[data-state="waiting"]').waitFor();
  await bob.page.getByLabel('Message', { exact: true }).fill('Did you get this while away?');
  await bob.page.keyboard.press('Enter');
  await messageText(bob.page, 'Did you get this while away?').waitFor();
  await alice.context.setOffline(false);
  await alice.page.locator('#connection[data-state="open"]').waitFor({ timeout: 40_000 });
  await messageText(alice.page, 'Did you get this while away?').waitFor();
});

await step('bob signs out and alice sees him go offline', async () => {
  await bob.page.goto(`${BASE}/account`);
  await bob.page.locator('#acc-username', { hasText: 'bob' }).waitFor();
  await shot(bob.page, 'account');
  await bob.page.goto(`${BASE}/chat`);
  await bob.page.locator('#connection[data-state="open"]').waitFor();
  await person(alice.page, 'bob').and(alice.page.locator('[data-online="true"]')).waitFor();
  await bob.page.getByRole('button', { name: 'Sign out' }).click();
  await bob.page.waitForURL(/\/login/);
  await bob.page.getByText('You are signed out.').waitFor();
  await person(alice.page, 'bob').and(alice.page.locator('[data-online="false"]')).waitFor();
  await alice.page.locator('#conv-sub', { hasText: 'Offline' }).waitFor();
});

await step('a wrong password shows a clear error; the right one signs in', async () => {
  const { page } = bob;
  await page.getByLabel('Username or email').fill('bob');
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  const error = page.getByRole('alert');
  await error.filter({ hasText: 'Wrong username or password' }).waitFor();
  await shot(page, 'login');
  expect(page.url().includes('/login'), 'a wrong password left the sign-in page');
  // The broker refuses the next sign-in as overloaded (as in a login storm): the page
  // waits the Retry-After it was given and signs in with the second try.
  const tries = [];
  await page.route('**/api/auth/login', async (route) => {
    const request = route.request();
    if (request.method() !== 'POST') return route.continue();
    tries.push(Date.now());
    if (tries.length > 1) return route.continue();
    return route.fulfill({
      status: 503,
      contentType: 'application/json',
      headers: {
        'Retry-After': '1',
        'Access-Control-Allow-Origin': request.headers().origin,
        'Access-Control-Allow-Credentials': 'true',
        'Access-Control-Expose-Headers': 'retry-after',
      },
      body: JSON.stringify({ error: { code: 'overloaded', message: 'the server is too busy to sign you in right now' } }),
    });
  });
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${BASE}/chat`);
  await page.unroute('**/api/auth/login');
  expect(tries.length === 2, `the page tried to sign in ${tries.length} times, not 2`);
  expect(tries[1] - tries[0] >= 1000, `the page came back after ${tries[1] - tries[0]} ms, before Retry-After`);
  await page.locator('#dm-list button.conv', { hasText: 'alice' }).click();
  // History after signing in again: all three messages.
  await messageText(page, 'Did you get this while away?').waitFor();
  const count = await page.locator('#messages li.message').count();
  expect(count === 3, `bob sees ${count} messages after signing in again, not 3`);
});

await step('history pages back with the before cursor', async () => {
  // bob posts 60 more messages over the REST API (cookie + CSRF token), then alice
  // opens the conversation afresh: the newest 50 first, the rest on scrolling back.
  const posted = await bob.page.evaluate(async () => {
    const broker = document.querySelector('meta[name="broker"]').content;
    const me = await (await fetch(`${broker}/api/auth/me`, { credentials: 'include' })).json();
    const list = await (await fetch(`${broker}/api/conversations`, { credentials: 'include' })).json();
    const id = list.conversations.find((c) => c.kind === 'direct').id;
    let ok = 0;
    for (let i = 1; i <= 60; i += 1) {
      const response = await fetch(`${broker}/api/conversations/${id}/messages`, {
        method: 'POST',
        credentials: 'include',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf_token },
        body: JSON.stringify({ body: `numbered message ${i}` }),
      });
      if (response.status === 201) ok += 1;
    }
    return ok;
  });
  expect(posted === 60, `bob posted ${posted} of 60 messages`);
  await messageText(alice.page, 'numbered message 60').waitFor();
  await alice.page.reload();
  await messageText(alice.page, 'numbered message 60').waitFor();
  let count = await alice.page.locator('#messages li.message').count();
  expect(count === 50, `alice sees ${count} messages after a reload, not the newest 50`);
  await alice.page.locator('#messages-scroll').evaluate((el) => { el.scrollTop = 0; });
  await alice.page.getByText('This is the start of the conversation.').waitFor();
  count = await alice.page.locator('#messages li.message').count();
  expect(count === 63, `alice sees ${count} messages after scrolling back, not 63`);
  const bodies = await alice.page.locator('#messages li.message .body').allTextContents();
  expect(bodies[0].startsWith('Hello Bob') && bodies[62] === 'numbered message 60', 'history is out of order');
});

await step('rooms: alice creates one, bob finds and joins it, they talk live, bob leaves', async () => {
  await alice.page.goto(`${BASE}/chat`);
  await alice.page.locator('#connection[data-state="open"]').waitFor();
  await alice.page.getByText('Join or create a room').click();
  await alice.page.getByLabel('New room name').fill('#General');
  await alice.page.getByLabel('Topic (optional)').fill('anything goes');
  await alice.page.getByRole('button', { name: 'Create room' }).click();
  await alice.page.locator('#conv-title', { hasText: '#general' }).waitFor();
  await alice.page.locator('#conv-sub', { hasText: 'anything goes · 1 member' }).waitFor();
  await alice.page.locator('#room-list button.conv', { hasText: '#general' }).waitFor();
  // A second room of the same name is refused with a clear message.
  await alice.page.getByLabel('New room name').fill('general');
  await alice.page.getByRole('button', { name: 'Create room' }).click();
  await alice.page.locator('#room-error').filter({ hasText: /taken|exists/i }).waitFor();

  // bob opens the room list (it is fetched afresh) and joins.
  await bob.page.goto(`${BASE}/chat`);
  await bob.page.locator('#connection[data-state="open"]').waitFor();
  await bob.page.getByText('Join or create a room').click();
  await bob.page.getByRole('button', { name: 'Join #general' }).click();
  await bob.page.locator('#conv-title', { hasText: '#general' }).waitFor();
  await alice.page.locator('#conv-sub', { hasText: '2 members' }).waitFor();

  await bob.page.getByLabel('Message', { exact: true }).fill('Hello room!');
  await bob.page.keyboard.press('Enter');
  await messageText(alice.page, 'Hello room!').waitFor();
  await alice.page.getByLabel('Message', { exact: true }).fill('Welcome, bob.');
  await alice.page.keyboard.press('Enter');
  await messageText(bob.page, 'Welcome, bob.').waitFor();
  await shot(alice.page, 'room');

  await bob.page.getByRole('button', { name: 'Leave #general' }).click();
  await bob.page.locator('#conv-sub', { hasText: 'You left #general.' }).waitFor();
  await bob.page.locator('#room-list', { hasText: 'No rooms joined yet.' }).waitFor();
  await alice.page.locator('#conv-sub', { hasText: '1 member' }).waitFor();
  // Once he has left, bob gets nothing more from the room.
  await alice.page.getByLabel('Message', { exact: true }).fill('Is anyone still here?');
  await alice.page.keyboard.press('Enter');
  await messageText(alice.page, 'Is anyone still here?').waitFor();
  await bob.page.waitForTimeout(500);
  const leaked = await bob.page.getByText('Is anyone still here?').count();
  expect(leaked === 0, 'bob received a message of a room he left');
});

await step('bob, the first account, owns the install: he makes alice an administrator on the People page', async () => {
  const { page } = bob;
  // alice is no administrator yet.
  await alice.page.goto(`${BASE}/logs`);
  await alice.page.getByRole('alert').filter({ hasText: 'Only administrators' }).waitFor();
  await page.goto(`${BASE}/admin`);
  await page.getByRole('link', { name: 'People' }).waitFor();
  await page.getByLabel('Role of alice').selectOption('admin');
  await page.getByRole('status').filter({ hasText: 'alice is now admin.' }).waitFor();
  await shot(page, 'people');
});

await step('alice (an administrator) reads the logs; the dev mailbox lists the welcome mails', async () => {
  const { page } = alice;
  await page.goto(`${BASE}/logs`);
  await page.locator('#logs-body tr').first().waitFor();
  await shot(page, 'logs');
  await page.getByLabel('Service').selectOption('auth');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/service=auth/);
  await page.locator('#logs-body tr').first().waitFor();
  const services = await page.locator('#logs-body tr td:nth-child(3)').allTextContents();
  expect(services.every((s) => s === 'auth'), `the auth filter shows ${[...new Set(services)]}`);
  // The welcome mails, newest first (the listener sends them from the register events).
  await page.goto(`${BASE}/dev/mailbox`);
  for (let i = 0; i < 20 && (await page.locator('.mail', { hasText: 'alice@example.com' }).count()) === 0; i += 1) {
    await page.waitForTimeout(500);
    await page.reload();
  }
  await page.locator('.mail', { hasText: 'alice@example.com' }).first().waitFor();
  await page.locator('.mail', { hasText: 'bob@example.com' }).first().waitFor();
  await shot(page, 'mailbox');
  // The mailbox is for administrators only: a visitor who is not signed in gets nothing
  // (a member's 403 is tests/attacks_hardening.rs::dev_mailbox_is_for_admins_only).
  const visitor = await newUser('visitor');
  await visitor.page.goto(`${BASE}/dev/mailbox`);
  await visitor.page.getByText('Log in as an administrator to read the dev mailbox.').waitFor();
  expect((await visitor.page.locator('.mail').count()) === 0, 'a visitor sees no mail');
  await visitor.context.close();
});

await step('alice confirms her address from the mailed link, changes her password and sees her sessions', async () => {
  const { page } = alice;
  // The link of her welcome mail, as the dev mailbox shows it.
  await page.goto(`${BASE}/dev/mailbox`);
  const welcome = await page.locator('.mail', { hasText: 'alice@example.com' }).first().textContent();
  const link = welcome.match(/https?:\/\/\S+\/verify-email#token=[A-Za-z0-9_-]+/);
  expect(link !== null, `no verification link in alice's welcome mail: ${welcome}`);
  await page.goto(link[0]);
  await page.getByText('Thank you: alice@example.com is confirmed.').waitFor();
  await shot(page, 'verified');
  await page.goto(`${BASE}/account`);
  await page.getByText('Not confirmed').waitFor({ state: 'detached' });

  // A wrong current password is refused; the right one changes it.
  const next = 'a brand new horse battery';
  await page.goto(`${BASE}/account/password`);
  await page.getByLabel('Current password').fill('not my password');
  await page.getByLabel('New password').fill(next);
  await page.getByRole('button', { name: 'Change password' }).click();
  await page.locator('#form-error:not([hidden])').waitFor();
  await page.getByLabel('Current password').fill(password);
  await page.getByLabel('New password').fill(next);
  await page.getByRole('button', { name: 'Change password' }).click();
  await page.getByText(/Your password is changed\./).waitFor();
  await shot(page, 'password-changed');

  // Her sessions: this one stays, marked as such.
  await page.goto(`${BASE}/account/sessions`);
  await page.locator('#session-rows', { hasText: 'This session' }).waitFor();
  await shot(page, 'sessions');
  // The old password no longer signs in; the new one does (another browser).
  const elsewhere = await newUser('alice-elsewhere');
  await elsewhere.page.goto(`${BASE}/login`);
  await elsewhere.page.getByLabel('Username or email').fill('alice');
  await elsewhere.page.getByLabel('Password').fill(password);
  await elsewhere.page.getByRole('button', { name: 'Sign in' }).click();
  await elsewhere.page.getByRole('alert').filter({ hasText: 'Wrong username or password' }).waitFor();
  await elsewhere.page.getByLabel('Password').fill(next);
  await elsewhere.page.getByRole('button', { name: 'Sign in' }).click();
  await elsewhere.page.waitForURL(/\/chat/);
  await elsewhere.context.close();
});

await step('bob deletes his account: his conversation with alice is gone, he cannot sign in', async () => {
  await alice.page.goto(`${BASE}/chat`);
  await alice.page.locator('#connection[data-state="open"]').waitFor();
  await alice.page.locator('#dm-list button.conv', { hasText: 'bob' }).click();
  await messageText(alice.page, 'numbered message 60').waitFor();

  const { page } = bob;
  await page.goto(`${BASE}/account`);
  await page.locator('#acc-username', { hasText: 'bob' }).waitFor();
  // The confirmation must name the account (checked before the password is sent).
  await page.getByLabel('Type your username to confirm').fill('alice');
  await page.getByLabel('Your password').fill('not my password');
  await page.getByRole('button', { name: 'Delete my account' }).click();
  await page.locator('#delete-error', { hasText: 'Type your username, bob, to confirm.' }).waitFor();
  expect(page.url().endsWith('/account'), 'a wrong confirmation left the account page');
  await page.getByLabel('Type your username to confirm').fill('bob');
  // Deleting needs the password too: a session alone (a borrowed laptop) is not enough.
  await page.getByLabel('Your password').fill('not my password');
  await page.getByRole('button', { name: 'Delete my account' }).click();
  await page.locator('#delete-error', { hasText: 'That is not your password.' }).waitFor();
  await page.getByLabel('Your password').fill(password);
  await page.getByRole('button', { name: 'Delete my account' }).click();
  await page.waitForURL(/\/login\?deleted=1/);
  await page.getByText('Your account has been deleted.').waitFor();
  await shot(page, 'deleted');

  // alice, live: the conversation closes and leaves her list.
  await alice.page.locator('#conv-sub', { hasText: 'This conversation was deleted.' }).waitFor();
  await alice.page.locator('#dm-list button.conv', { hasText: 'bob' }).waitFor({ state: 'detached' });
  await alice.page.reload();
  await alice.page.locator('#connection[data-state="open"]').waitFor();
  await alice.page.locator('#people li').first().waitFor({ state: 'attached' }).catch(() => {});
  expect((await person(alice.page, 'bob').count()) === 0, 'bob is still listed among the people');
  expect((await alice.page.locator('#dm-list button.conv').count()) === 0, 'a direct conversation is left');

  await page.getByLabel('Username or email').fill('bob');
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'Wrong username or password' }).waitFor();
});

// ---- edits, deletes and reactions (js/message-actions.js) ----
const carol = await newUser('carol');
laterUsers.push(carol);
const carolsMessage = (page, text) => page.locator('#messages li.message', { hasText: text });

await step('alice edits and deletes her own message; carol sees both live', async () => {
  await register(carol, false);
  await alice.page.goto(`${BASE}/chat`);
  await alice.page.locator('#connection[data-state="open"]').waitFor();
  await person(alice.page, 'carol').and(alice.page.locator('[data-online="true"]')).waitFor();
  await alice.page.getByRole('button', { name: 'Message carol' }).click();
  await alice.page.locator('#conv-title', { hasText: 'carol' }).waitFor();
  const composer = alice.page.getByLabel('Message', { exact: true });
  await composer.fill('Lunch at 12?');
  await alice.page.keyboard.press('Enter');
  await composer.fill('oops, wrong conversation');
  await alice.page.keyboard.press('Enter');
  await messageText(alice.page, 'oops, wrong conversation').waitFor();
  await carol.page.locator('#dm-list button.conv', { hasText: 'alice' }).click();
  await messageText(carol.page, 'oops, wrong conversation').waitFor();
  // carol may not edit or delete alice's messages: no such buttons for her.
  await carolsMessage(carol.page, 'Lunch at 12?').hover();
  expect((await carol.page.getByRole('button', { name: 'Edit message' }).count()) === 0, 'carol can edit alice\'s message');

  const lunch = carolsMessage(alice.page, 'Lunch at 12?');
  await lunch.hover();
  await lunch.getByRole('button', { name: 'Edit message' }).click();
  // The item's text is in the field now: find the field by its form.
  const field = alice.page.locator('#messages form.edit').getByLabel('Edit message');
  await field.fill('Lunch at 12:30?');
  await field.press('Enter');
  await messageText(alice.page, 'Lunch at 12:30?').waitFor();
  await carolsMessage(alice.page, 'Lunch at 12:30?').locator('.edited', { hasText: '(edited)' }).waitFor();
  await carolsMessage(carol.page, 'Lunch at 12:30?').locator('.edited', { hasText: '(edited)' }).waitFor();
  const tooltip = await carolsMessage(carol.page, 'Lunch at 12:30?').locator('.edited').getAttribute('title');
  expect(/^Edited /.test(tooltip || ''), `the edited marker's tooltip is ${tooltip}`);

  const oops = carolsMessage(alice.page, 'oops, wrong conversation');
  await oops.hover();
  await oops.getByRole('button', { name: 'Delete message' }).click();
  await oops.getByRole('button', { name: 'Yes, delete' }).click();
  await alice.page.locator('#messages li.message.deleted', { hasText: 'message deleted' }).waitFor();
  await carol.page.locator('#messages li.message.deleted', { hasText: 'message deleted' }).waitFor();
  expect((await messageText(carol.page, 'oops, wrong conversation').count()) === 0, 'the deleted text still shows for carol');
  await alice.page.mouse.move(0, 0);
  await shot(alice.page, 'e2e-edit-delete');
});

await step('carol and alice react; chips count and highlight their own, live', async () => {
  const offered = await carol.page.evaluate(async (broker) => {
    const answer = await fetch(`${broker}/api/reactions`).then((r) => r.json());
    return answer.emoji;
  }, await carol.page.locator('meta[name="broker"]').getAttribute('content'));
  const lunch = carolsMessage(carol.page, 'Lunch at 12:30?');
  await lunch.hover();
  await lunch.getByRole('button', { name: 'Add a reaction' }).click();
  const picks = lunch.locator('.picker button.pick');
  await picks.first().waitFor();
  const shown = await picks.allTextContents();
  expect(JSON.stringify(shown) === JSON.stringify(offered), `the picker shows ${shown.length} emoji, not the server's ${offered.length}`);
  await lunch.getByRole('button', { name: 'React with 👍' }).click();
  await lunch.locator('.chip.me', { hasText: '👍 1' }).waitFor();
  const alicesLunch = carolsMessage(alice.page, 'Lunch at 12:30?');
  await alicesLunch.locator('.chip', { hasText: '👍 1' }).waitFor();
  expect((await alicesLunch.locator('.chip.me').count()) === 0, 'carol\'s reaction is highlighted for alice');
  // alice adds hers by clicking the chip: 2 for both, highlighted for each.
  await alicesLunch.locator('.chip', { hasText: '👍 1' }).click();
  await alicesLunch.locator('.chip.me', { hasText: '👍 2' }).waitFor();
  await lunch.locator('.chip.me', { hasText: '👍 2' }).waitFor();
  // ... and a heart from the picker.
  await alicesLunch.hover();
  await alicesLunch.getByRole('button', { name: 'Add a reaction' }).click();
  await alicesLunch.getByRole('button', { name: 'React with ❤️' }).click();
  await lunch.locator('.chip', { hasText: '❤️ 1' }).waitFor();
  await carol.page.mouse.move(0, 0);
  await shot(carol.page, 'e2e-reactions');
  // Clicking her chip again takes carol's back.
  await lunch.locator('.chip.me', { hasText: '👍 2' }).click();
  await alicesLunch.locator('.chip.me', { hasText: '👍 1' }).waitFor();
  // History agrees after a reload.
  await carol.page.reload();
  await carol.page.locator('#connection[data-state="open"]').waitFor();
  await carol.page.locator('#dm-list button.conv', { hasText: 'alice' }).click();
  await carolsMessage(carol.page, 'Lunch at 12:30?').locator('.chip', { hasText: '👍 1' }).waitFor();
  await carol.page.locator('#messages li.message.deleted', { hasText: 'message deleted' }).waitFor();
});

// ---- unread counts and @mentions (js/unread.js, js/notifications.js): carol is away from a room where alice writes ----

/** Calls the broker's API from `page`, as the page's own scripts do. */
async function apiFrom(page, path, options) {
  return page.evaluate(async ([path, options]) => {
    const { api } = await import('/assets/js/api.js');
    return api(path, options);
  }, [path, options]);
}

await step('carol sees unread badges and the count in the tab title as alice writes', async () => {
  const room = await apiFrom(carol.page, '/api/rooms', { method: 'POST', body: { name: 'lunch' } });
  await apiFrom(alice.page, `/api/rooms/${room.id}/join`, { method: 'POST', body: {} });
  await carol.page.locator('#room-list button.conv', { hasText: 'lunch' }).waitFor();
  for (const body of ['Who is in for lunch?', 'Noodles at noon', 'Bring @carol along!']) {
    await apiFrom(alice.page, `/api/conversations/${room.id}/messages`, { method: 'POST', body: { body } });
  }
  const badge = carol.page.locator('#room-list button.conv', { hasText: 'lunch' }).locator('.badge');
  await badge.filter({ hasText: '3' }).waitFor();
  await carol.page.waitForFunction(() => document.title.startsWith('(3) '));
  await shot(carol.page, 'e2e-unread');
  // A reload counts from the server: the same.
  await carol.page.reload();
  await carol.page.locator('#connection[data-state="open"]').waitFor();
  await badge.filter({ hasText: '3' }).waitFor();
  await carol.page.waitForFunction(() => document.title.startsWith('(3) '));
});

await step('carol opens her mention from the bell: the room shows, and every count clears', async () => {
  const { page } = carol;
  await page.locator('#bell .bell-count', { hasText: '1' }).waitFor();
  await page.locator('#bell').click();
  const mention = page.locator('#notification-list li.notification.unread', { hasText: 'alice mentioned you in #lunch' });
  await mention.waitFor();
  await mention.locator('.notification-snippet', { hasText: 'Bring @carol along!' }).waitFor();
  await shot(page, 'e2e-mentions');
  await mention.locator('button').click();
  await page.locator('#conv-title', { hasText: '#lunch' }).waitFor();
  await messageText(page, 'Bring @carol along!').waitFor();
  await page.locator('#room-list button.conv', { hasText: 'lunch' }).locator('.badge').waitFor({ state: 'detached' });
  await page.waitForFunction(() => !document.title.startsWith('('));
  await page.locator('#bell .bell-count').waitFor({ state: 'hidden' });
  // Another tab of carol's agrees once the read receipt reaches it.
  const other = await carol.context.newPage();
  await other.goto(`${BASE}/chat`);
  await other.locator('#connection[data-state="open"]').waitFor();
  await other.locator('#room-list button.conv', { hasText: 'lunch' }).waitFor();
  expect((await other.locator('#room-list .badge').count()) === 0, 'the other tab still shows unread messages');
  await other.close();
});

// ---- search (js/search.js) ----
await step('search: alice finds an old message by a word, sees it highlighted, and lands on it in its history', async () => {
  // One message with the word, then 60 more over the REST API: the found one is older
  // than the newest 50 a conversation opens with, so opening it loads history around it.
  const posted = await alice.page.evaluate(async () => {
    const broker = document.querySelector('meta[name="broker"]').content;
    const me = await (await fetch(`${broker}/api/auth/me`, { credentials: 'include' })).json();
    const list = await (await fetch(`${broker}/api/conversations`, { credentials: 'include' })).json();
    const id = list.conversations.find((c) => c.kind === 'room' && c.name === 'general').id;
    const bodies = ['The Lighthouse keeper waved at the lighthouse (NEAR* "quoted")'];
    for (let i = 1; i <= 60; i += 1) bodies.push(`filler message ${i}`);
    let ok = 0;
    for (const body of bodies) {
      const response = await fetch(`${broker}/api/conversations/${id}/messages`, {
        method: 'POST',
        credentials: 'include',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf_token },
        body: JSON.stringify({ body }),
      });
      if (response.status === 201) ok += 1;
    }
    return ok;
  });
  expect(posted === 61, `alice posted ${posted} of 61 messages`);
  const { page } = alice;
  await page.goto(`${BASE}/chat`);
  await page.locator('#connection[data-state="open"]').waitFor();

  // FTS syntax is only text: no error, no results.
  await page.getByLabel('Search messages').fill('((( AND * "');
  await page.getByLabel('Search messages').press('Enter');
  await page.locator('#search-status', { hasText: 'No messages match' }).waitFor();

  await page.getByLabel('Search messages').fill('lighthouse');
  await page.getByLabel('Search messages').press('Enter');
  const hit = page.locator('#search-list .search-hit').first();
  await hit.waitFor();
  expect((await page.locator('#search-list .search-hit').count()) === 1, 'one message has the word');
  const marks = await hit.locator('mark').allTextContents();
  expect(marks.join(',') === 'Lighthouse,lighthouse', `highlighted: ${marks.join(',')}`);
  const meta = await hit.locator('.search-meta').textContent();
  expect(meta.includes('#general') && meta.includes('alice'), `result names ${meta}`);
  await shot(page, 'e2e-search-results');

  await hit.click();
  await page.locator('#conv-title', { hasText: '#general' }).waitFor();
  const found = page.locator('#messages li.message.jumped', { hasText: 'The Lighthouse keeper' });
  await found.waitFor();
  const box = await found.boundingBox();
  const view = await page.locator('#messages-scroll').boundingBox();
  expect(box && view && box.y >= view.y && box.y + box.height <= view.y + view.height,
    'the found message is not in view');
  const bodies = await page.locator('#messages li.message .body').allTextContents();
  expect(bodies.includes('filler message 60') && bodies.includes('Is anyone still here?'),
    'the history around the found message is not loaded');
  await shot(page, 'e2e-search');
});

// ---- attachments (js/attachments.js) ----

/** CRC-32 as PNG chunks use it. */
function crc32(bytes) {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit += 1) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** A valid RGB PNG of `width` × `height`: a gradient with a disc, so a preview shows something. */
function png(width, height) {
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const frame = Buffer.alloc(8 + data.length + 4);
    frame.writeUInt32BE(data.length, 0);
    body.copy(frame, 4);
    frame.writeUInt32BE(crc32(body), 8 + data.length);
    return frame;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8 bits per channel, RGB, no interlace
  const row = width * 3 + 1;
  const pixels = Buffer.alloc(row * height);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const at = y * row + 1 + x * 3;
      const inDisc = (x - width * 0.7) ** 2 + (y - height * 0.4) ** 2 < (height * 0.2) ** 2;
      pixels.set(inDisc ? [255, 196, 40] : [40 + (x * 80) / width, 90 + (y * 100) / height, 190], at);
    }
  }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', header),
    chunk('IDAT', deflateSync(pixels)), chunk('IEND', Buffer.alloc(0))]);
}

/** A valid one-page PDF that says `text`. */
function pdf(text) {
  const content = `BT /F1 18 Tf 24 60 Td (${text}) Tj ET`;
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 144] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>',
    `<< /Length ${content.length} >>\nstream\n${content}\nendstream`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>',
  ];
  let out = '%PDF-1.4\n';
  const offsets = objects.map((object, i) => {
    const at = out.length;
    out += `${i + 1} 0 obj\n${object}\nendobj\n`;
    return at;
  });
  const xref = out.length;
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  out += offsets.map((at) => `${String(at).padStart(10, '0')} 00000 n \n`).join('');
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, 'latin1');
}

await step('alice sends carol a PNG (picked) and a PDF (dropped); carol sees the preview, the file chip and the full-size view', async () => {
  const picture = png(640, 360);
  const minutes = pdf('Minutes of the e2e meeting');
  const { page } = alice;
  await page.locator('#dm-list button.conv', { hasText: 'carol' }).click();
  await page.locator('#conv-title', { hasText: 'carol' }).waitFor();

  // A refused file shows the server's reason on its chip; ✕ takes it away.
  await page.locator('#attach-input').setInputFiles({ name: 'empty.txt', mimeType: 'text/plain', buffer: Buffer.alloc(0) });
  const refused = page.locator('#uploads li.upload.failed', { hasText: 'empty.txt' });
  await refused.waitFor();
  const reason = await refused.locator('.upload-status').textContent();
  expect(/empty/i.test(reason), `the empty file's chip says: ${reason}`);
  await refused.getByRole('button', { name: 'Remove empty.txt' }).click();
  await refused.waitFor({ state: 'detached' });

  // The PNG through the attach button's file chooser ...
  const [chooser] = await Promise.all([
    page.waitForEvent('filechooser'),
    page.getByRole('button', { name: 'Attach files' }).click(),
  ]);
  await chooser.setFiles({ name: 'harbour.png', mimeType: 'image/png', buffer: picture });
  // ... the PDF dropped onto the conversation.
  const dropped = await page.evaluateHandle(([name, bytes]) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([new Uint8Array(bytes)], name, { type: 'application/pdf' }));
    return transfer;
  }, ['minutes.pdf', [...minutes]]);
  await page.dispatchEvent('#conversation', 'dragenter', { dataTransfer: dropped });
  await page.dispatchEvent('#conversation', 'drop', { dataTransfer: dropped });
  await page.locator('#uploads li.upload.done', { hasText: 'harbour.png' }).waitFor();
  await page.locator('#uploads li.upload.done', { hasText: 'minutes.pdf' }).waitFor();
  // The picked image's chip shows its thumbnail once uploaded.
  await page.locator('#uploads li.upload.done img.upload-thumb:not(.unloaded)').waitFor();
  await shot(page, 'e2e-attach-pending');
  await page.getByLabel('Message', { exact: true }).fill('Plans for Friday');
  await page.keyboard.press('Enter');
  await page.locator('#uploads').waitFor({ state: 'hidden' });

  const { page: other } = carol;
  await other.locator('#dm-list button.conv', { hasText: 'alice' }).click();
  const message = carolsMessage(other, 'Plans for Friday');
  const preview = message.getByRole('button', { name: 'Open harbour.png full size' });
  await preview.waitFor();
  // The thumbnail really loads (from the broker, with carol's cookie), sized in advance.
  await preview.locator('img:not(.unloaded)').waitFor();
  const [natural, width, height, alt] = await preview.locator('img').evaluate((image) => [
    image.naturalWidth, image.getAttribute('width'), image.getAttribute('height'), image.alt]);
  expect(natural > 0 && natural <= 400, `the thumbnail is ${natural} px wide`);
  expect(width === '400' && height === '225', `the preview is sized ${width} × ${height}, not 400 × 225`);
  expect(alt === 'harbour.png', `the preview's alt text is ${alt}`);
  const chip = message.locator('a.att-file', { hasText: 'minutes.pdf' });
  await chip.locator('.att-size', { hasText: `${minutes.length} bytes` }).waitFor();
  // The chip's link downloads the very bytes, for carol.
  const fetched = await chip.evaluate(async (link) => {
    const response = await fetch(link.href, { credentials: 'include' });
    return [response.status, (await response.text()).slice(0, 5)];
  });
  expect(fetched[0] === 200 && fetched[1] === '%PDF-', `the PDF's link gives ${fetched.join(' ')}`);
  await other.mouse.move(0, 0);
  await shot(other, 'e2e-attachments');

  // The full-size view: the original, closed by Esc.
  await preview.click();
  const view = other.locator('dialog.lightbox[open]');
  await view.waitFor();
  await other.waitForFunction(() => {
    const image = document.querySelector('dialog.lightbox[open] img');
    return image?.complete && image.naturalWidth === 640;
  });
  await view.getByRole('link', { name: 'Download harbour.png' }).waitFor();
  await shot(other, 'e2e-lightbox');
  await other.keyboard.press('Escape');
  await view.waitFor({ state: 'detached' });
});

await step('alice pastes a file into the composer, and a message takes at most 10 files', async () => {
  const { page } = alice;
  const composer = page.getByLabel('Message', { exact: true });
  await composer.focus();
  await composer.evaluate((field) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File(['pasted words'], 'clipboard.txt', { type: 'text/plain' }));
    field.dispatchEvent(new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true }));
  });
  const pasted = page.locator('#uploads li.upload.done', { hasText: 'clipboard.txt' });
  await pasted.waitFor();
  expect((await composer.inputValue()) === '', 'the pasted file went into the text as well');
  // 10 more: one too many for a message.
  const notes = Array.from({ length: 10 }, (_, i) => ({
    name: `note-${i + 1}.txt`, mimeType: 'text/plain', buffer: Buffer.from(`note ${i + 1}`),
  }));
  await page.locator('#attach-input').setInputFiles(notes);
  await page.locator('#send-error', { hasText: 'at most 10 files: 1 was left out' }).waitFor();
  await page.locator('#uploads li.upload.done').nth(9).waitFor();
  const chips = await page.locator('#uploads li.upload').count();
  expect(chips === 10, `${chips} files wait to be sent, not 10`);
  expect((await page.locator('#uploads li.upload', { hasText: 'note-10.txt' }).count()) === 0, 'the 11th file was taken');
  await shot(page, 'e2e-attach-limit');
  // ✕ drops one from the list.
  await pasted.getByRole('button', { name: 'Remove clipboard.txt' }).click();
  await pasted.waitFor({ state: 'detached' });
  expect((await page.locator('#uploads li.upload').count()) === 9, 'removing a file left the list as it was');
});

const problems = [...alice.problems, ...bob.problems, ...carol.problems];
await step('no script errors on any page', async () => {
  expect(problems.length === 0, problems.join('\n'));
});

await browser.close();
const passed = results.filter((r) => r.ok).length;
const failed = results.length - passed;
console.log(`e2e: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
