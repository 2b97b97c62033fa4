import { describe, expect, it } from 'vitest';
import { BusyPoller, Contention } from '../src/transport/busy-poll.js';
import { RunQueueClock } from '../src/transport/run-queue.js';
import type { Link } from '../src/transport/link.js';

/** A run-queue clock the test advances by hand (nanoseconds). */
class FakeClock {
  ns = 0;
  read(): number {
    return this.ns;
  }
}

const until = async (cond: () => boolean, ms = 10_000): Promise<void> => {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setImmediate(r));
  }
};

describe('Contention: polling backs off while the thread waits for a CPU', () => {
  it('a window with little run-queue time keeps polling; one with 20% or more stops it, with a back-off that doubles and resets', () => {
    const c = new Contention(new FakeClock());
    // 5 ms of polling, 0.5 ms of it waiting for a CPU (10%): fine.
    expect(c.add(100, 2.5, 0.25e6)).toBe(true);
    expect(c.add(103, 2.5, 0.25e6)).toBe(true);
    expect(c.allows(103)).toBe(true);
    // 5 ms with 2 ms waiting (40%): contended; off for 20 ms.
    expect(c.add(110, 5, 2e6)).toBe(false);
    expect(c.verdicts).toBe(1);
    expect(c.allows(129.9)).toBe(false);
    expect(c.allows(130)).toBe(true);
    // Contended again at the probe: 40 ms this time.
    expect(c.add(135, 5, 5e6)).toBe(false);
    expect(c.allows(174.9)).toBe(false);
    expect(c.allows(175)).toBe(true);
    // A clean window resets the back-off to 20 ms.
    expect(c.add(180, 5, 0)).toBe(true);
    expect(c.add(190, 5, 1e6)).toBe(false);
    expect(c.allows(209.9)).toBe(false);
    expect(c.allows(210)).toBe(true);
  });

  it('the back-off stops doubling at 2 s', () => {
    const c = new Contention(new FakeClock());
    let now = 0;
    for (let i = 0; i < 12; i++) {
      expect(c.add(now, 5, 5e6)).toBe(false);
      while (!c.allows(now)) now += 1;
    }
    const start = now;
    expect(c.add(now, 5, 5e6)).toBe(false);
    while (!c.allows(now)) now += 1;
    expect(now - start).toBe(2000);
  });

  it("reads this thread's run-queue time from /proc where Linux has it", () => {
    const clock = new RunQueueClock();
    const v = clock.read();
    if (process.platform === 'linux') {
      expect(typeof v).toBe('number');
      expect(v).toBeGreaterThanOrEqual(0);
    }
    clock.close();
    expect(clock.read()).toBe(undefined);
    expect(new RunQueueClock('/nonexistent/schedstat').read()).toBe(undefined);
  });
});

describe('BusyPoller', () => {
  const link = () => {
    const calls = { awake: 0, asleep: 0, polls: 0 };
    const l = {
      setPolling: (on: boolean) => (on ? calls.awake++ : calls.asleep++),
      poll: () => calls.polls++,
    } as unknown as Link;
    return { l, calls };
  };

  it('polls while an operation is pending, and sleeps once nothing is', async () => {
    const { l, calls } = link();
    let pending = 1;
    const p = new BusyPoller((f) => f(l), { busyPollUs: 60_000_000 }, () => pending, new Contention(new FakeClock()));
    p.progress();
    expect(p.polling).toBe(true);
    await until(() => calls.polls > 3);
    expect(calls.awake).toBe(1);
    pending = 0;
    await until(() => !p.polling);
    expect(calls.asleep).toBe(1);
  });

  it('sleeps once nothing has arrived for busyPollUs, with an operation still pending', async () => {
    const { l, calls } = link();
    const p = new BusyPoller((f) => f(l), { busyPollUs: 1000 }, () => 1, new Contention(new FakeClock()));
    p.progress();
    await until(() => !p.polling);
    expect(calls.asleep).toBe(1);
  });

  it('stops polling, with an operation still pending, once the thread waits for a CPU 20% of the time, and does not restart during the back-off', async () => {
    const { l, calls } = link();
    const clock = new FakeClock();
    const crowd = new Contention(clock);
    const p = new BusyPoller((f) => f(l), { busyPollUs: 60_000_000, busyPollBackoff: true }, () => 1, crowd);
    p.progress();
    // Every poll turn the thread "waited" as long as it polled: fully contended.
    const started = performance.now();
    const timer = setInterval(() => (clock.ns = (performance.now() - started) * 1e6), 0);
    try {
      await until(() => !p.polling);
    } finally {
      clearInterval(timer);
    }
    expect(crowd.verdicts).toBe(1);
    expect(calls.asleep).toBe(1);
    p.progress();
    // Within the 20 ms back-off (generously: the check runs right after the verdict).
    if (!crowd.allows(performance.now())) expect(p.polling).toBe(false);
    await until(() => crowd.allows(performance.now()));
    p.progress();
    expect(p.polling).toBe(true);
    p.stop();
    await until(() => !p.polling);
  });

  it('busyPollBackoff false (the default): polls on through contention', async () => {
    const clock = new FakeClock();
    const crowd = new Contention(clock);
    let pending = 1;
    const p = new BusyPoller((f) => f(link().l), { busyPollUs: 60_000_000, busyPollBackoff: false }, () => pending, crowd);
    p.progress();
    const t0 = performance.now();
    await until(() => {
      clock.ns = (performance.now() - t0) * 1e6;
      return performance.now() - t0 > 30;
    });
    expect(p.polling).toBe(true);
    expect(crowd.verdicts).toBe(0);
    pending = 0;
    await until(() => !p.polling);
  });

  it('keeps polling through a clean window', async () => {
    const { l } = link();
    const crowd = new Contention(new FakeClock());
    let pending = 1;
    const p = new BusyPoller((f) => f(l), { busyPollUs: 60_000_000, busyPollBackoff: true }, () => pending, crowd);
    p.progress();
    const t0 = performance.now();
    await until(() => performance.now() - t0 > 30);
    expect(p.polling).toBe(true);
    expect(crowd.verdicts).toBe(0);
    pending = 0;
    await until(() => !p.polling);
  });
});
