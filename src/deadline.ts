/**
 * `p`, or `error()` if it has not settled by `deadline` (Date.now() milliseconds). The timer is
 * cleared when `p` settles; `error` is called only when the deadline passes, so it can describe
 * the state at that moment.
 */
export function withDeadline<T>(p: Promise<T>, deadline: number, error: () => Error): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(error()), Math.max(0, deadline - Date.now()));
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
